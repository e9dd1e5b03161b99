"""Helpers of the adapter tests: references as the sync layer gives them, golden files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.adapters import fhirjson

GOLDEN = Path(__file__).parent / "golden"

#: Set ALLIANCE_FHIR_UPDATE_GOLDEN=1 to rewrite golden files after an intended change.
UPDATE = os.environ.get("ALLIANCE_FHIR_UPDATE_GOLDEN") == "1"


def server_refs(system: str, value: str) -> Mapping[str, Any]:
    """What the sync layer would hand us: references to resources already on the server."""
    kind = "Practitioner" if system.endswith("us-npi") else "Patient"
    return {"reference": f"{kind}/{value.lower()}"}


def assert_golden(name: str, resource: dict[str, Any]) -> None:
    """The resource, as stable pretty JSON, equals the golden file byte for byte."""
    text = fhirjson.dumps(resource, indent=2) + "\n"
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    if not path.exists():
        pytest.fail(f"golden file {path} is missing; run with ALLIANCE_FHIR_UPDATE_GOLDEN=1")
    assert path.read_text(encoding="utf-8") == text, f"{name} differs from its golden file"
