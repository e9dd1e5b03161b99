"""From domain objects to the records a sync run wants on the server (``Desired``).

This is the last pure step before the server: adapters have produced valid FHIR JSON; here
each resource gets its record key, its conditional search and its bundle group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from alliance_fhir.adapters.codesystem import codesystem_for_instruments
from alliance_fhir.adapters.questionnaire import questionnaire_from_instrument
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import InvalidInputError, LicensedWordingRequired, Problem
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.overlay import load_overlay
from alliance_fhir.instruments.schema import Instrument, Overlay
from alliance_fhir.sync.model import Desired


@dataclass
class Records:
    """Desired records plus what could not become one (and why)."""

    desired: list[Desired] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def extend(self, other: Records) -> None:
        self.desired.extend(other.desired)
        self.problems.extend(other.problems)
        self.skipped.extend(other.skipped)


def canonical_search(resource_url: str, version: str) -> str:
    return f"url={resource_url}&version={version}"


def find_overlay(settings: Settings, instrument: Instrument) -> Overlay | None:
    """The licensee overlay for ``instrument`` in ``overlay_dir`` (``<id>.yaml``), if any."""
    if settings.overlay_dir is None:
        return None
    for suffix in (".yaml", ".yml", ".json"):
        path = Path(settings.overlay_dir) / f"{instrument.id}{suffix}"
        if path.is_file():
            return load_overlay(path, instrument)
    return None


def instrument_records(
    library: InstrumentLibrary,
    settings: Settings,
    *,
    labels_only: bool = False,
    only: Iterable[str] | None = None,
) -> Records:
    """Our CodeSystem and one Questionnaire per instrument.

    A licensed instrument with neither an overlay nor ``labels_only`` is skipped with the
    reason, not published with our labels by surprise.
    """
    wanted = set(only) if only is not None else None
    out = Records()
    base = settings.canonical_base
    codesystem = codesystem_for_instruments(library.all(), base)
    out.desired.append(
        Desired(
            kind="codesystem",
            key=f"{codesystem['url']}|{codesystem['version']}",
            resource=codesystem,
            search=canonical_search(codesystem["url"], codesystem["version"]),
            group="codesystem",
        )
    )
    for instrument in library.all():
        if wanted is not None and instrument.id not in wanted:
            continue
        try:
            overlay = find_overlay(settings, instrument)
            q = questionnaire_from_instrument(
                instrument, overlay=overlay, labels_only=labels_only, canonical_base=base
            )
        except LicensedWordingRequired as exc:
            out.skipped.append(f"{instrument.id}: {exc}")
            continue
        except InvalidInputError as exc:
            out.problems.extend(exc.problems)
            continue
        out.desired.append(
            Desired(
                kind="questionnaire",
                key=f"{q['url']}|{q['version']}",
                resource=q,
                search=canonical_search(q["url"], q["version"]),
                group=f"questionnaire:{instrument.id}",
            )
        )
    return out
