"""After a scenario: does the server hold exactly what we expected, and does the state agree?

Read straight from the server (never through the proxy, never from HAPI's search cache):

* every expected record is on the server once, counted by our identifier (``found``);
  a second resource with the same identifier is a ``duplicate``; an expected record with none
  is ``lost``; a resource carrying an identifier of ours that no expected record has is
  ``unexpected``;
* the state store agrees with the server: every expected record is ``synced``, and every
  ``synced`` row's ``server_id`` is a resource carrying that record's identifier, at the
  recorded version or newer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from alliance_fhir.adapters.record import Desired
from alliance_fhir.sync.state import StateStore

NO_CACHE = {"Cache-Control": "no-cache", "Accept": "application/fhir+json"}


@dataclass
class Check:
    expected: int = 0
    found: int = 0
    duplicates: int = 0
    lost: int = 0
    unexpected: int = 0
    state_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.found == self.expected
            and not self.duplicates
            and not self.lost
            and not self.unexpected
            and not self.state_errors
        )


def _token(desired: Desired) -> str:
    return desired.search.removeprefix("identifier=")


def _pages(http: httpx.Client, base_url: str, resource_type: str) -> Iterator[dict[str, Any]]:
    url: str | None = f"{base_url}/{resource_type}"
    params: dict[str, str] | None = {"_count": "200"}
    for _ in range(1000):
        if url is None:
            return
        resp = http.get(url, params=params, headers=NO_CACHE)
        resp.raise_for_status()
        bundle = resp.json()
        for entry in bundle.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                yield entry["resource"]
        url = next(
            (link["url"] for link in bundle.get("link") or [] if link.get("relation") == "next"),
            None,
        )
        params = None


def server_tokens(
    base_url: str, resource_types: Sequence[str], namespace: str, *, timeout: float = 60.0
) -> dict[str, list[tuple[str, str, int]]]:
    """Our identifier token -> [(resource type, id, version)] of every resource carrying it."""
    out: dict[str, list[tuple[str, str, int]]] = {}
    with httpx.Client(timeout=timeout) as http:
        for rtype in resource_types:
            for resource in _pages(http, base_url, rtype):
                version = int((resource.get("meta") or {}).get("versionId") or 0)
                idents = resource.get("identifier") or []
                # QuestionnaireResponse.identifier is a single Identifier in R4, not a list
                for ident in [idents] if isinstance(idents, dict) else idents:
                    system = str(ident.get("system", ""))
                    if system.startswith(namespace):
                        token = f"{system}|{ident.get('value', '')}"
                        out.setdefault(token, []).append((rtype, str(resource["id"]), version))
    return out


def check(
    base_url: str,
    expected: Sequence[Desired],
    state_path: Path | None,
    namespace: str,
    *,
    also_synced: frozenset[str] = frozenset(),
) -> Check:
    """Compare the server (and the state store, when given) with the expected records.

    ``also_synced``: kinds the state may hold beyond the expected records (a daemon publishes
    the CodeSystem and Questionnaires into the same state store each cycle)."""
    types = sorted({d.resource_type for d in expected})
    on_server = server_tokens(base_url, types, namespace)
    result = Check(expected=len(expected))
    wanted = Counter(_token(d) for d in expected)
    for token in wanted:
        hits = len(on_server.get(token, []))
        if hits == 0:
            result.lost += 1
        else:
            result.found += 1
            result.duplicates += hits - 1
    result.unexpected = sum(len(v) for k, v in on_server.items() if k not in wanted)
    if state_path is not None:
        result.state_errors = _state_errors(state_path, expected, on_server, also_synced)
    return result


def _state_errors(
    state_path: Path,
    expected: Sequence[Desired],
    on_server: dict[str, list[tuple[str, str, int]]],
    also_synced: frozenset[str] = frozenset(),
) -> list[str]:
    errors: list[str] = []
    by_record = {(d.kind, d.key): d for d in expected}
    with StateStore(state_path) as store:
        rows = store.all_records()
    for ident in by_record:
        row = rows.get(ident)
        if row is None or row.status != "synced":
            errors.append(f"{ident[0]}/{ident[1]}: not synced in the state store")
    for ident, row in rows.items():
        if row.status != "synced":
            continue
        desired = by_record.get(ident)
        if desired is None:
            if ident[0] in also_synced:
                continue
            errors.append(f"{ident[0]}/{ident[1]}: synced in the state but not expected")
            continue
        hits = on_server.get(_token(desired), [])
        match = [h for h in hits if h[0] == row.resource_type and h[1] == row.server_id]
        if not match:
            errors.append(
                f"{ident[0]}/{ident[1]}: state says {row.resource_type}/{row.server_id},"
                " which does not carry its identifier on the server"
            )
            continue
        recorded = int(row.version_id or 0)
        if match[0][2] < recorded:
            errors.append(
                f"{ident[0]}/{ident[1]}: server version {match[0][2]} older than the"
                f" state's {recorded}"
            )
    return errors
