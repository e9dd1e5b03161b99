"""Shared helpers for the goal tests: example plans and a tiny plan builder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.goals import Plan, load_plans

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples" / "goals"
GOLDEN = Path(__file__).parent / "golden"

PATIENT = "http://example-clinic.org/mrn|MRN-1001"
LEAD = "http://hl7.org/fhir/sid/us-npi|1234567893"
OTHER = "http://hl7.org/fhir/sid/us-npi|1245319599"


def example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".csv"))


def load_example(name: str) -> Plan:
    plans, problems = load_plans(EXAMPLES / name)
    assert problems == []
    assert len(plans) == 1
    return plans[0]


def make_plan(**goal: Any) -> Plan:
    """A one-goal plan; ``goal`` overrides the goal's fields."""
    fields: dict[str, Any] = {
        "key": "g1",
        "client_words": "Sleep through the night",
        "proposed_by": "client",
        "lifecycle_status": "active",
    }
    fields.update(goal)
    return Plan.model_validate(
        {
            "key": "p1",
            "patient": PATIENT,
            "clinicians": [LEAD],
            "status": "active",
            "goals": [fields],
        }
    )


@pytest.fixture
def write(tmp_path: Path) -> Any:
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write
