"""The monitor against the real HAPI server: rules fire once, recover, re-fire; responses
completed elsewhere are scored once; unscorable ones are logged, not alerted; the report."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import yaml

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir, MonitorResult

from .clinickit import PHI, make_api

NS = "http://alliance-fhir.org/fhir/identifier"
MRN = "http://example-clinic.org/mrn"
SRS = "http://alliance-fhir.org/fhir/Questionnaire/srs"
NO_CACHE = {"Cache-Control": "no-cache"}
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def api(fhir_base_url: str, published_clinic: Path, tmp_path: Path) -> Iterator[AllianceFhir]:
    with make_api(fhir_base_url, tmp_path / "state.sqlite3") as instance:
        yield instance


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    saved = structlog.get_config()
    alog.configure(level="DEBUG", json=True, stream=stream)
    try:
        yield stream
    finally:
        structlog.configure(**saved)  # as before: other tests capture logs their own way


def _get(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    resp = http.get(path, params={**params, "_count": "200"}, headers=NO_CACHE)
    resp.raise_for_status()
    return [e["resource"] for e in resp.json().get("entry") or []]


def _ours(http: httpx.Client, rtype: str, kind: str, **params: str) -> list[dict[str, Any]]:
    return _get(http, f"/{rtype}", identifier=f"{NS}/{kind}|", **params)


def _new_patient(http: httpx.Client, mrn: str) -> str:
    """A synthetic patient (no name, no birth date): the EHR's, we never create one."""
    body = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}]}
    resp = http.post("/Patient", json=body, headers={"Content-Type": "application/fhir+json"})
    resp.raise_for_status()
    return str(resp.json()["id"])


def _srs_file(tmp: Path, mrn: str, marks: list[float], *, first_week: int) -> Path:
    """Weekly SRS check-ins from ``first_week`` on (week 0 is eight weeks ago), each item
    marked ``marks[i]``."""
    records = []
    for i, mark in enumerate(marks):
        week = first_week + i
        when = NOW - timedelta(weeks=8) + timedelta(weeks=week)
        records.append(
            {
                "key": f"{mrn.lower()}-srs-{week:02d}",
                "instrument": "srs",
                "authored": when.isoformat(),
                "answers": {q: str(mark) for q in ("q1", "q2", "q3", "q4")},
            }
        )
    doc = {"defaults": {"patient": {"system": MRN, "value": mrn}}, "assessments": records}
    path = tmp / f"{mrn}-{first_week}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _direct_srs(
    http: httpx.Client, patient_id: str, marks: dict[str, float], *, days_ago: int = 1
) -> str:
    """A QuestionnaireResponse completed elsewhere (no identifier of ours), straight in."""
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{SRS}|1.0.0",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id}"},
        "author": {"reference": f"Patient/{patient_id}"},
        "authored": (NOW - timedelta(days=days_ago)).isoformat(),
        "item": [{"linkId": q, "answer": [{"valueDecimal": v}]} for q, v in marks.items()],
    }
    resp = http.post(
        "/QuestionnaireResponse", json=qr, headers={"Content-Type": "application/fhir+json"}
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


def _monitor(api: AllianceFhir) -> MonitorResult:
    result = api.monitor()
    assert result.ok, result.failures
    return result


def _rules(resources: list[dict[str, Any]], patient_id: str) -> list[str]:
    return sorted(
        i["value"].split(":", 1)[0]
        for r in resources
        for i in r["identifier"]
        if i["value"].endswith(f":{patient_id}")
    )


def test_falling_scores_raise_each_rule_once_and_recovery_closes_them(
    api: AllianceFhir, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    patient = _new_patient(fhir_http, "SYN-0001")
    falling = _srs_file(tmp_path, "SYN-0001", [9.6, 9.7, 9.4, 7.8], first_week=0)
    assert api.push_assessments([falling]).ok

    first = _monitor(api)
    again = _monitor(api)

    flags = _ours(fhir_http, "Flag", "alert-flag")
    tasks = _ours(fhir_http, "Task", "alert-task")
    assert _rules(flags, patient) == ["srs-below-cutoff", "srs-drop"]
    assert _rules(tasks, patient) == ["srs-below-cutoff", "srs-drop"]
    assert first.alerts["new"] == 2
    assert again.alerts["new"] == 0
    assert again.alerts["unchanged"] == 2
    latest_qr = _get(
        fhir_http, "/QuestionnaireResponse", identifier=f"{NS}/assessment|syn-0001-srs-03"
    )
    for flag in flags:
        assert flag["status"] == "active"
        assert flag["subject"]["reference"] == f"Patient/{patient}"
    for task in tasks:
        assert (task["status"], task["intent"], task["priority"]) == (
            "requested",
            "order",
            "urgent",
        )
        assert task["for"]["reference"] == f"Patient/{patient}"
        assert task["focus"]["reference"] == f"QuestionnaireResponse/{latest_qr[0]['id']}"
    drop = next(t for t in tasks if "srs-drop" in t["identifier"][0]["value"])
    assert "fell by 6.4 (from 37.6 to 31.2)" in drop["description"]

    better = _srs_file(tmp_path, "SYN-0001", [9.5], first_week=4)
    assert api.push_assessments([better]).ok
    recovered = _monitor(api)

    assert recovered.alerts["recovered"] == 2
    flags = _ours(fhir_http, "Flag", "alert-flag")
    tasks = _ours(fhir_http, "Task", "alert-task")
    assert len(flags) == 2
    assert len(tasks) == 2
    assert all(f["status"] == "inactive" and f["period"]["end"] for f in flags)
    assert all(t["status"] == "completed" for t in tasks)
    assert all(t["note"][-1]["text"].startswith("Scores recovered:") for t in tasks)

    # falling again is a new episode: the Flags reopen, new Tasks are opened
    worse = _srs_file(tmp_path, "SYN-0001", [7.0], first_week=5)
    assert api.push_assessments([worse]).ok
    refired = _monitor(api)
    assert refired.alerts["new"] == 2
    flags = _ours(fhir_http, "Flag", "alert-flag")
    tasks = _ours(fhir_http, "Task", "alert-task")
    assert len(flags) == 2
    assert all(f["status"] == "active" for f in flags)
    assert sorted(t["status"] for t in tasks) == [
        "completed",
        "completed",
        "requested",
        "requested",
    ]


def test_after_the_demo_the_falling_client_has_an_active_flag_and_a_requested_task(
    api: AllianceFhir, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    assert api.push_assessments([clinic / "clinic" / "assessments"]).ok
    assert api.push_goals([clinic / "goals"]).ok
    _monitor(api)
    second = _monitor(api)
    assert second.alerts["new"] == 0

    patient = _get(fhir_http, "/Patient", identifier=f"{MRN}|MRN-1003")[0]["id"]
    clinician = _get(
        fhir_http, "/Practitioner", identifier="http://hl7.org/fhir/sid/us-npi|1234567893"
    )
    flags = _ours(fhir_http, "Flag", "alert-flag", subject=f"Patient/{patient}")
    tasks = _ours(fhir_http, "Task", "alert-task", subject=f"Patient/{patient}")
    assert [f for f in flags if f["status"] == "active"]
    requested = [t for t in tasks if t["status"] == "requested"]
    assert requested
    assert {t["owner"]["reference"] for t in requested} == {f"Practitioner/{clinician[0]['id']}"}
    assert {t["focus"]["reference"].split("/")[0] for t in requested} == {"QuestionnaireResponse"}

    # the report shows the trend and the goals, and nothing that names the client
    out = tmp_path / "report" / "mrn-1003.html"
    png = tmp_path / "report" / "mrn-1003.png"
    with_png = shutil.which("chromium") is not None
    written = api.write_report(f"{MRN}|MRN-1003", out, png=png if with_png else None)
    page = out.read_text(encoding="utf-8")
    assert "<svg" in page
    assert "Therapeutic Relationship Check-in" in page
    assert "Be back at work three days a week" in page  # the goal, in the client's words
    assert "Meet my manager to agree a phased return." in page  # a milestone
    assert f"Client {patient}" in page
    assert [p for p in PHI if p in page] == []
    if with_png:
        assert written[-1] == png
        assert png.stat().st_size > 10_000


def test_a_response_completed_elsewhere_gets_one_score_observation(
    api: AllianceFhir, fhir_base_url: str, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    patient = _new_patient(fhir_http, "SYN-0002")
    qr_id = _direct_srs(fhir_http, patient, {"q1": 9.0, "q2": 8.5, "q3": 9.5, "q4": 9.0})

    first = _monitor(api)
    _monitor(api)
    with make_api(fhir_base_url, tmp_path / "lost-state.sqlite3") as fresh:  # state lost
        _monitor(fresh)

    assert first.external == 1
    found = _get(fhir_http, "/Observation", identifier=f"{NS}/score|ext-{qr_id}")
    assert len(found) == 1
    obs = found[0]
    assert obs["valueQuantity"]["value"] == 36
    assert obs["derivedFrom"][0]["reference"] == f"QuestionnaireResponse/{qr_id}"
    assert obs["subject"]["reference"] == f"Patient/{patient}"
    # and the ones we pushed are not scored a second time
    assert len(_get(fhir_http, "/Observation", subject=f"Patient/{patient}")) == 1


def test_an_unscorable_response_is_logged_without_phi_and_raises_no_alert(
    api: AllianceFhir, fhir_http: httpx.Client, log_text: io.StringIO
) -> None:
    patient = _new_patient(fhir_http, "SYN-0003")
    # very low marks, one missing: scored, these would be far below the cutoff
    qr_id = _direct_srs(fhir_http, patient, {"q1": 1.0, "q2": 1.5, "q4": 1.0})

    result = _monitor(api)

    assert any(line.startswith(f"QuestionnaireResponse/{qr_id}") for line in result.not_scored)
    assert _ours(fhir_http, "Flag", "alert-flag", subject=f"Patient/{patient}") == []
    assert _ours(fhir_http, "Task", "alert-task", subject=f"Patient/{patient}") == []
    assert _get(fhir_http, "/Observation", subject=f"Patient/{patient}") == []
    lines = [json.loads(line) for line in log_text.getvalue().splitlines() if line.startswith("{")]
    skipped = [e for e in lines if e["event"] == "monitoring.response_not_scored"]
    assert len(skipped) == 1
    assert skipped[0]["response"] == f"QuestionnaireResponse/{qr_id}"
    assert skipped[0]["assessment"] == f"ext-{qr_id}"
    assert "answers.q3: required item not answered" in skipped[0]["reason"]
    assert [p for p in (*PHI, "SYN-0003") if p in log_text.getvalue()] == []


def test_the_pull_is_incremental_and_keeps_a_server_clock_watermark(
    api: AllianceFhir, fhir_http: httpx.Client
) -> None:
    patient = _new_patient(fhir_http, "SYN-0004")
    _direct_srs(fhir_http, patient, {"q1": 9.0, "q2": 9.0, "q3": 9.0, "q4": 9.0}, days_ago=7)
    first = api.monitor()
    watermark = api.store.watermark("pull:qr")
    assert first.pulled == 1
    assert watermark is not None
    api.settings.pull_overlap_seconds = 0
    # nothing changed since: nothing new to pull (the overlap window is closed here)
    assert api.monitor().pulled <= 1
    _direct_srs(fhir_http, patient, {"q1": 9.5, "q2": 9.0, "q3": 9.0, "q4": 9.0})
    third = api.monitor()
    assert 1 <= third.pulled <= 2
    newer = api.store.watermark("pull:qr")
    assert newer is not None
    assert newer > watermark
