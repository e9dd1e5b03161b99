"""Publish and sync against the real HAPI server: idempotence, updates, conflicts."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from alliance_fhir import log as alog
from alliance_fhir.exceptions import ServerRejectedError
from alliance_fhir.fhir import FhirClient

from .clinickit import PHI, CountingTransport, make_api


def _count(http: httpx.Client, rtype: str, **params: str) -> int:
    resp = http.get(
        f"/{rtype}", params={**params, "_summary": "count"}, headers={"Cache-Control": "no-cache"}
    )
    resp.raise_for_status()
    return int(resp.json()["total"])


def test_capability_statement_reports_fhir_4_0_1(fhir_base_url: str, tmp_path: Path) -> None:
    with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
        report = api.doctor()
    assert report.reachable
    assert report.fhir_version == "4.0.1"
    assert report.missing == []


def test_every_questionnaire_round_trips_and_publishing_twice_duplicates_nothing(
    fhir_base_url: str, fhir_reset: Callable[[], None], fhir_http: httpx.Client, tmp_path: Path
) -> None:
    transport = CountingTransport()
    with make_api(fhir_base_url, tmp_path / "s.sqlite3", transport) as api:
        first = api.publish(labels_only=True)
        assert first.ok, first.result and first.result.failures
        assert first.result is not None
        assert first.result.counts["created"] == 6  # CodeSystem + five Questionnaires
        for instrument in api.library.all():
            ours = json.loads(api.render_questionnaire(instrument.id, labels_only=True))
            found = list(api.client.search("Questionnaire", {"url": ours["url"]}))
            assert len(found) == 1
            served = {k: v for k, v in found[0].items() if k not in ("id", "meta")}
            assert served == ours
        transport.reset()
        second = api.publish(labels_only=True)
    assert second.result is not None
    assert second.result.counts["unchanged"] == 6
    assert transport.writes == 0
    for instrument_id in ("trc-client", "trc-clinician", "wai-sr", "srs", "ors"):
        url = f"http://alliance-fhir.org/fhir/Questionnaire/{instrument_id}"
        assert _count(fhir_http, "Questionnaire", url=url) == 1


def test_publish_with_lost_state_finds_existing_resources_instead_of_duplicating(
    fhir_base_url: str, fhir_reset: Callable[[], None], fhir_http: httpx.Client, tmp_path: Path
) -> None:
    with make_api(fhir_base_url, tmp_path / "a.sqlite3") as api:
        assert api.publish(labels_only=True).ok
    with make_api(fhir_base_url, tmp_path / "fresh.sqlite3") as api:  # state lost
        again = api.publish(labels_only=True)
    assert again.ok
    assert again.result is not None
    assert again.result.counts["created"] == 0
    assert _count(fhir_http, "Questionnaire") == 5
    assert (
        _count(
            fhir_http,
            "CodeSystem",
            url="http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir-codes",
        )
        == 1
    )


def test_invalid_resource_is_rejected_by_the_server_with_its_operation_outcome(
    fhir_base_url: str,
) -> None:
    with FhirClient(fhir_base_url) as client, pytest.raises(ServerRejectedError) as caught:
        client.create(
            {"resourceType": "Observation", "status": "not-a-status", "code": {"text": "x"}}
        )
    err = caught.value
    assert err.status in (400, 422)
    assert err.outcome is not None
    assert err.outcome["resourceType"] == "OperationOutcome"
    assert "not-a-status" in str(err) or "status" in str(err)


def test_sync_creates_all_then_writes_nothing_then_updates_exactly_the_changed_record(
    fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    transport = CountingTransport()
    inputs = [clinic / "clinic" / "assessments"]
    with make_api(fhir_base_url, tmp_path / "s.sqlite3", transport) as api:
        assert api.publish(labels_only=True).ok
        first = api.push_assessments(inputs)
        assert first.ok, first.result and first.result.failures
        assert first.result is not None
        created = first.result.counts["created"]
        assert created > 100
        n_qr = _count(fhir_http, "QuestionnaireResponse")
        n_obs = _count(fhir_http, "Observation")
        assert n_qr + n_obs == created

        transport.reset()
        second = api.push_assessments(inputs)
        assert second.result is not None
        assert transport.writes == 0
        assert second.result.counts["unchanged"] == created
        assert transport.counts["GET"] <= 1  # at most the state-vs-server sample read

        record_file = clinic / "clinic" / "assessments" / "mrn-1001.yaml"
        doc = yaml.safe_load(record_file.read_text())
        doc["assessments"][0]["answers"]["heard"] = "3"
        record_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        transport.reset()
        third = api.push_assessments(inputs)
    assert third.result is not None
    assert transport.writes == 1  # one transaction carrying the changed assessment
    assert third.result.counts["updated"] == 2  # its answers and its score
    assert third.result.counts["created"] == 0
    assert _count(fhir_http, "QuestionnaireResponse") == n_qr
    key = doc["assessments"][0]["key"]
    qr = fhir_http.get(
        "/QuestionnaireResponse",
        params={"identifier": f"http://alliance-fhir.org/fhir/identifier/assessment|{key}"},
    ).json()["entry"][0]["resource"]
    answers = {i["linkId"]: i["answer"][0] for i in qr["item"] if "answer" in i}
    assert answers["heard"]["valueCoding"]["code"].endswith(".3")


def test_a_record_changed_on_the_server_is_not_overwritten_and_status_reports_it(
    fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    inputs = [clinic / "clinic" / "assessments"]
    record_file = clinic / "clinic" / "assessments" / "mrn-1002.yaml"
    doc = yaml.safe_load(record_file.read_text())
    key = doc["assessments"][0]["key"]
    token = f"http://alliance-fhir.org/fhir/identifier/assessment|{key}"
    with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
        assert api.publish(labels_only=True).ok
        assert api.push_assessments(inputs).ok
        # Someone in the EHR amends the response.
        qr = fhir_http.get("/QuestionnaireResponse", params={"identifier": token}).json()["entry"][
            0
        ]["resource"]
        qr["status"] = "amended"
        put = fhir_http.put(
            f"/QuestionnaireResponse/{qr['id']}",
            json=qr,
            headers={"Content-Type": "application/fhir+json"},
        )
        assert put.status_code == 200, put.text
        # Our source changes the same assessment.
        doc["assessments"][0]["answers"]["heard"] = "1"
        record_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        report = api.push_assessments(inputs)
        assert not report.ok
        assert report.result is not None
        assert report.result.counts["conflict"] == 1
        status = api.status()
    assert [(c.kind, c.key) for c in status.conflicts] == [("assessment", key)]
    served = fhir_http.get(f"/QuestionnaireResponse/{qr['id']}").json()
    assert served["status"] == "amended"  # the EHR's change survived
    heard = next(i for i in served["item"] if i["linkId"] == "heard")
    assert not heard["answer"][0]["valueCoding"]["code"].endswith(".1")


def test_unknown_patient_is_a_per_record_error_and_the_rest_proceeds(
    fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    record_file = clinic / "clinic" / "assessments" / "mrn-1001.yaml"
    doc = yaml.safe_load(record_file.read_text())
    doc["assessments"][0]["patient"] = {
        "system": "http://example-clinic.org/mrn",
        "value": "MRN-9999",
    }
    record_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
        assert api.publish(labels_only=True).ok
        report = api.push_assessments([clinic / "clinic" / "assessments"])
        status = api.status()
    assert report.result is not None
    assert report.result.counts["rejected"] == 2  # the response and its score
    assert report.result.counts["created"] > 100
    assert _count(fhir_http, "Patient") == 4  # we never create a patient
    assert [d.key for d in status.dead_letters] == [doc["assessments"][0]["key"]] * 2
    assert "unknown Patient" in status.dead_letters[0].reason


def test_no_log_line_carries_patient_data(fhir_base_url: str, clinic: Path, tmp_path: Path) -> None:
    stream = io.StringIO()
    alog.configure(level="DEBUG", json=True, stream=stream)
    try:
        with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
            api.publish(labels_only=True)
            api.push_assessments([clinic / "clinic" / "assessments"])
            api.push_goals([clinic / "goals"])
            api.pull_plans("http://example-clinic.org/mrn|MRN-1001")
    finally:
        alog.configure(level="WARNING")
    text = stream.getvalue()
    assert "sync.done" in text  # the capture really saw the run
    leaks = [p for p in PHI if p in text]
    assert leaks == []
