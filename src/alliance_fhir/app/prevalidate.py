"""Write ``adapters/prevalidated.json``: ``make prevalidated`` (a developer's tool).

Builds our CodeSystem and every shipped instrument's Questionnaire under default settings,
for both wording choices (own wording where allowed, labels only), validates each with the
installed fhir.resources models (no list consulted) and lists the sha256 of its stable JSON.
Run it after changing an instrument definition or the adapters that build them, or after
upgrading fhir.resources; the unit tests say when a definition change makes it due.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from alliance_fhir.adapters import _prevalidated, fhirjson
from alliance_fhir.app.records import instrument_records
from alliance_fhir.config import Settings
from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE
from alliance_fhir.instruments.library import load_library


def shipped_settings() -> Settings:
    """The default settings the list is made for, whatever ``ALLIANCE_FHIR_*`` says in this
    shell: what changes the shipped resources is pinned here."""
    return Settings(
        server_url="http://127.0.0.1/fhir",
        canonical_base=DEFAULT_CANONICAL_BASE,
        mappings_dir=None,
        overlay_dir=None,
    )


def shipped_resources() -> dict[str, dict[str, Any]]:
    """Every resource the shipped definitions build under :func:`shipped_settings`, by the
    digest it is listed under, in digest order."""
    settings = shipped_settings()
    library = load_library()
    out: dict[str, dict[str, Any]] = {}
    for labels_only in (False, True):
        records = instrument_records(library, settings, labels_only=labels_only)
        if records.problems:
            raise SystemExit(f"the shipped definitions have problems: {records.problems}")
        for record in records.desired:
            out[_prevalidated.digest(fhirjson.dumps(record.resource))] = record.resource
    return {d: out[d] for d in sorted(out)}


def main() -> int:
    shipped = shipped_resources()
    for resource in shipped.values():
        fhirjson.validate(resource, source="prevalidated", mode="full")  # raises if refused
    digests = list(shipped)
    body = {"fhir.resources": _prevalidated.models_version(), "digests": digests}
    _prevalidated.LIST.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    print(f"{_prevalidated.LIST}: {len(digests)} resources", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
