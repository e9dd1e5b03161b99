"""A form renderer's exports pushed to a real HAPI server as they come (#16): no id or
identifier, the patient as ``{reference, display}``, one form left unfinished. The complete one
becomes a QuestionnaireResponse and its score Observation, the unfinished one only a
QuestionnaireResponse; pushing the same exports again writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from alliance_fhir.adapters.identity import DEFAULT_NAMESPACE
from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

MRN = "http://example-clinic.org/mrn"
FHIR_JSON = "application/fhir+json"


def _export(patient_id: str, marks: list[float], status: str) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0",
        "status": status,
        "authored": "2024-03-04T17:00:00-05:00",
        "subject": {"reference": f"Patient/{patient_id}", "display": "Adaeze Okafor"},
        "item": [
            {"linkId": f"q{n}", "answer": [{"valueDecimal": m}]} for n, m in enumerate(marks, 1)
        ],
    }


def _ours(http: httpx.Client, rtype: str, kind: str) -> list[dict[str, Any]]:
    bundle = http.get(
        f"{rtype}", params={"identifier": f"{DEFAULT_NAMESPACE}/{kind}|", "_count": "100"}
    )
    found = bundle.raise_for_status().json().get("entry") or []
    return [e["resource"] for e in found]


def test_renderer_exports_are_pushed_scored_once_and_unfinished_ones_unscored(
    fhir_base_url: str, published_clinic: Path, tmp_path: Path
) -> None:
    with httpx.Client(base_url=fhir_base_url + "/", headers={"Accept": FHIR_JSON}) as http:
        hits = http.get("Patient", params={"identifier": f"{MRN}|MRN-1001"}).json()
        patient_id = hits["entry"][0]["resource"]["id"]
        inbox = tmp_path / "exports"
        inbox.mkdir()
        (inbox / "complete.json").write_text(
            json.dumps(_export(patient_id, [8.1, 7.5, 6.0, 9.2], "completed"))
        )
        (inbox / "unfinished.json").write_text(
            json.dumps(_export(patient_id, [8.1, 7.5], "in-progress"))
        )
        settings = Settings(
            server_url=fhir_base_url,
            state_path=tmp_path / "state.sqlite3",
            patient_identifier_system=MRN,
        )
        with AllianceFhir(settings) as api:
            first = api.push_assessments([inbox])
            assert first.problems == []
            assert first.result is not None
            assert first.result.failures == []
            assert first.result.counts["created"] == 3
            assert len(first.skipped) == 1
            assert first.skipped[0].endswith("in-progress: kept, not scored")
            again = api.push_assessments([inbox])
            assert again.result is not None
            assert (again.result.counts["created"], again.result.counts["updated"]) == (0, 0)

        responses = _ours(http, "QuestionnaireResponse", "assessment")
        scores = _ours(http, "Observation", "score")
        assert sorted(r["status"] for r in responses) == ["completed", "in-progress"]
        assert all(r["subject"]["reference"] == f"Patient/{patient_id}" for r in responses)
        assert [o["valueQuantity"]["value"] for o in scores] == [30.8]
