"""The instruments' records are built only when what they are built from changed.

Every ``sync`` sends our CodeSystem and one Questionnaire per instrument first. Building
them (rendering, the rules' concepts, full fhir.resources validation and its first imports)
costs more than the rest of an unchanged re-sync of a large clinic. So a sync keeps, in the
state store's ``meta``, the hash of everything they are built from and the records it built;
a later sync that finds the same hash, and each of those records ``synced`` with its stored
content hash and no open dead letter, counts them ``unchanged`` without building them (the
notes it gave, a licensed instrument left out, are said again). What they are built from:
the source context hash (``app.fingerprints.context_hash``: instrument definitions,
overlays, canonical base, ``labels_only``, the versions of this tool and its FHIR libraries)
and the concepts the monitoring rules add to the CodeSystem. A build that had problems is
not remembered (it is built, and its problems said, every time). ``--full`` and exports to
files always build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from alliance_fhir.app.fingerprints import context_hash
from alliance_fhir.app.records import Records
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.monitoring.alerts import rule_concepts
from alliance_fhir.monitoring.rules import Rule, load_rules
from alliance_fhir.sync.state import StateStore

__all__ = [
    "instruments_for_sync",
    "instruments_hash",
    "remember_instruments",
    "unchanged_instruments",
]


def instruments_hash(
    library: InstrumentLibrary,
    settings: Settings,
    *,
    labels_only: bool = False,
    rules: Sequence[Rule] | None = None,
) -> str:
    """The hash of everything the instruments' records are built from. ``rules``: the
    configured monitoring rules when the caller has them loaded already (read otherwise)."""
    if rules is None:
        rules = load_rules(library.all(), [settings.mappings_dir] if settings.mappings_dir else [])
    digest = hashlib.sha256(b"instruments\0")
    digest.update(context_hash(library, settings, labels_only=labels_only).encode())
    digest.update(json.dumps(rule_concepts(rules), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def unchanged_instruments(store: StateStore, built_from: str) -> Records | None:
    """The instruments' records counted ``unchanged`` (with the notes they gave) when the
    last sync built them from ``built_from`` and all are synced; None: build them."""
    kept = store.instruments_fingerprint()
    records = kept.get("records")
    if kept.get("hash") != built_from or not isinstance(records, list) or not records:
        return None
    for kind, key, content in records:
        if store.synced_hash(kind, key) != content:
            return None
    return Records(skipped=[str(n) for n in kept.get("skipped", [])], unchanged=len(records))


def remember_instruments(store: StateStore, built_from: str, records: Records) -> None:
    """Keep what a sync built (not when it had problems: see the module docstring)."""
    if records.problems or not records.desired:
        return
    store.set_instruments_fingerprint(
        {
            "hash": built_from,
            "records": [[d.kind, d.key, d.hash] for d in records.desired],
            "skipped": list(records.skipped),
        }
    )


def instruments_for_sync(
    store: StateStore,
    built_from: str,
    build: Callable[[], Records],
    *,
    full: bool = False,
    remember: bool = True,
) -> Records:
    """A sync's instruments' records: counted unchanged without building them when
    ``built_from`` is what the last sync built them from and all are synced, else
    ``build()`` (kept for the next sync when ``remember``); ``full`` always builds."""
    same = None if full else unchanged_instruments(store, built_from)
    if same is not None:
        return same
    built = build()
    if remember:
        remember_instruments(store, built_from, built)
    return built
