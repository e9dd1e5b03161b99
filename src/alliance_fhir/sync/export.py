"""Writing the records of a run as transaction bundles on disk, for interface engines that
deliver them themselves. No server, no state: every entry is a conditional update on our
identifier (or canonical url+version), which any FHIR server can replay idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alliance_fhir.adapters.fhirjson import dumps
from alliance_fhir.adapters.record import Desired


def export_bundles(records: Sequence[Desired], out_dir: Path, *, bundle_size: int) -> list[Path]:
    """Write ``bundle-0001.json``... keeping each record group inside one bundle."""
    out_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[Desired]] = {}
    for record in records:
        groups.setdefault(record.group, []).append(record)
    bundles: list[list[Desired]] = []
    for group in groups.values():
        if bundles and len(bundles[-1]) + len(group) <= bundle_size:
            bundles[-1].extend(group)
        else:
            bundles.append(list(group))
    written = []
    for number, members in enumerate(bundles, start=1):
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": d.uuid,
                    "resource": d.resource,
                    "request": {"method": "PUT", "url": f"{d.resource_type}?{d.search}"},
                }
                for d in members
            ],
        }
        path = out_dir / f"bundle-{number:04d}.json"
        path.write_text(dumps(bundle, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
