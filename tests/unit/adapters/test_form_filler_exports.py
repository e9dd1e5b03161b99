"""What a form renderer (LHC-Forms) exports is scoreable as is (#16): no id or identifier
(a stable key from the content), ``subject`` as ``{reference, display}`` (resolved through the
patient map or the server), every problem at once, ``in-progress`` kept but not scored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from alliance_fhir.adapters.response_files import read_questionnaire_responses
from alliance_fhir.app.patients import reference_resolver
from alliance_fhir.app.records import assessment_records
from alliance_fhir.assessments.model import Identifier
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.exceptions import FatalError
from alliance_fhir.fhir.client import FhirClient
from alliance_fhir.instruments.library import InstrumentLibrary

MRN = "http://example-clinic.org/mrn"
SSN = "http://hl7.org/fhir/sid/us-ssn"


def _export(marks: list[float], **extra: Any) -> dict[str, Any]:
    """An SRS as LHC-Forms exports it: no id, no identifier, a subject reference + display."""
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0",
        "status": "completed",
        "authored": "2024-03-04T17:00:00-05:00",
        "subject": {"reference": "Patient/7", "display": "Giulia Marchetti"},
        "item": [
            {"linkId": f"q{n}", "text": "Relationship", "answer": [{"valueDecimal": m}]}
            for n, m in enumerate(marks, 1)
        ],
        **extra,
    }


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    return load_settings(
        server_url="http://127.0.0.1:9/fhir", patient_map={"Patient/7": f"{MRN}|MRN-1001"}
    )


def _read(
    library: InstrumentLibrary, settings: Settings, path: Path, qr: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    path.write_text(json.dumps(qr), encoding="utf-8")
    found, problems, _ = read_questionnaire_responses(
        path, library.all(), resolve_reference=reference_resolver(settings, None)
    )
    return found, problems


def test_an_export_without_id_is_keyed_by_its_content(
    library: InstrumentLibrary, settings: Settings, tmp_path: Path
) -> None:
    [first], problems = _read(library, settings, tmp_path / "a.json", _export([9, 8, 7, 6]))
    assert problems == []
    assert first.key.startswith("qr-")
    assert first.patient == Identifier(system=MRN, value="MRN-1001")
    # the same form, exported again under another name: the same key (never written twice)
    [again], _ = _read(library, settings, tmp_path / "b.json", _export([9, 8, 7, 6]))
    assert again.key == first.key
    # a server's id/meta do not change it either; a different answer does
    [served], _ = _read(
        library, settings, tmp_path / "c.json", _export([9, 8, 7, 6], meta={"versionId": "3"})
    )
    assert served.key == first.key
    [other], _ = _read(library, settings, tmp_path / "d.json", _export([9, 8, 7, 5]))
    assert other.key != first.key


def test_every_problem_of_an_export_is_reported_together(
    library: InstrumentLibrary, settings: Settings, tmp_path: Path
) -> None:
    qr = _export([9, 8, 7, 6], authored="2024-03-04T17:00:00")
    qr["subject"] = {"reference": "Patient/unknown", "display": "Giulia Marchetti"}
    qr["item"][1]["answer"] = [{"valueBoolean": True}]
    found, problems = _read(library, settings, tmp_path / "x.json", qr)
    assert found == []
    assert [(p.field, p.reason) for p in problems] == [
        ("subject", "cannot resolve the subject reference"),
        ("authored", "needs a timezone offset (e.g. 2024-03-04T17:00:00-05:00)"),
        ("answers.q2", "expected valueCoding, valueDecimal, valueInteger or valueString"),
    ]
    assert all("Giulia" not in str(p) for p in problems)


def test_an_in_progress_export_is_kept_but_not_scored(
    library: InstrumentLibrary, settings: Settings, tmp_path: Path
) -> None:
    qr = _export([9, 8, 7, 6], status="in-progress")
    qr["item"].pop()
    [partial], problems = _read(library, settings, tmp_path / "p.json", qr)
    assert problems == []
    records = assessment_records([partial], library, settings)
    assert records.problems == []
    assert [d.kind for d in records.desired] == ["assessment"]
    assert records.desired[0].resource["status"] == "in-progress"
    assert records.skipped == [
        f"not scored: {tmp_path / 'p.json'}:1 [status]: assessment {partial.key}: "
        "in-progress: kept, not scored"
    ]


class _Server:
    """A FhirClient's ``read`` as the resolver uses it (a stand-in for the server)."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources = resources
        self.reads: list[str] = []

    def read(self, rtype: str, rid: str) -> Any:
        self.reads.append(f"{rtype}/{rid}")
        if f"{rtype}/{rid}" not in self.resources:
            raise FatalError("not found", status=404)
        return type("Read", (), {"resource": self.resources[f"{rtype}/{rid}"]})()


def _ident(system: str, value: str, mr: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "value": value}
    if mr:
        out["type"] = {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]
        }
    return out


def test_the_server_resolves_a_reference_to_the_mrn_never_another_identifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    server = _Server(
        {
            "Patient/7": {"identifier": [_ident(SSN, "123-45-6789"), _ident(MRN, "M-7", True)]},
            "Patient/8": {"identifier": [_ident(SSN, "987-65-4321")]},
            "Practitioner/n1": {"identifier": [_ident("http://hl7.org/fhir/sid/us-npi", "1")]},
        }
    )
    client = cast(FhirClient, server)  # only ``read`` is used
    settings = load_settings(server_url="http://127.0.0.1:9/fhir")
    resolve = reference_resolver(settings, lambda: client)
    assert resolve("Patient/7") == Identifier(system=MRN, value="M-7")
    assert resolve("http://127.0.0.1:9/fhir/Patient/7") == Identifier(system=MRN, value="M-7")
    assert resolve("http://other-ehr.example.org/fhir/Patient/7") is None  # not this server
    assert resolve("Patient/8") is None  # only an SSN: never taken
    assert resolve("Patient/404") is None
    assert resolve("Practitioner/n1") == Identifier(
        system="http://hl7.org/fhir/sid/us-npi", value="1"
    )
    assert resolve("Patient/7") == Identifier(system=MRN, value="M-7")
    assert server.reads.count("Patient/7") == 1  # once per run
    configured = load_settings(server_url="http://127.0.0.1:9/fhir", patient_identifier_system=SSN)
    preferred = reference_resolver(configured, lambda: client)
    assert preferred("Patient/7") == Identifier(system=SSN, value="123-45-6789")
