"""FHIR Bulk Data pulls against our HAPI build: ``$export`` kick-off, polling, streamed
NDJSON and job deletion on the real server; the monitor through ``$export`` wants exactly
the alerts the paged pull wants on the same data; a server without ``$export`` (an EHR-like
profile mount) falls back to paged search."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from alliance_fhir.api import AllianceFhir, MonitorResult
from alliance_fhir.config import Settings
from alliance_fhir.fhir import FhirClient
from alliance_fhir.fhir.bulk import BulkExport, ExportRequest, PollPolicy

QR = "QuestionnaireResponse"
SRS = "http://alliance-fhir.org/fhir/Questionnaire/srs"
MRN = "http://example-clinic.org/mrn"
FAST = PollPolicy(floor_seconds=0.5, cap_seconds=1.0, default_seconds=0.5, timeout_seconds=300)
NOW = datetime.now(UTC).replace(microsecond=0)


def _api(base_url: str, state: Path, **settings: Any) -> AllianceFhir:
    # Polls at most a second apart: HAPI answers every poll with Retry-After: 120
    defaults: dict[str, Any] = {"bulk_poll_max_seconds": 1.0}
    return AllianceFhir(Settings(server_url=base_url, state_path=state, **{**defaults, **settings}))


def _post(http: httpx.Client, resource: dict[str, Any]) -> str:
    resp = http.post(
        f"/{resource['resourceType']}",
        json=resource,
        headers={"Content-Type": "application/fhir+json"},
    )
    resp.raise_for_status()
    return str(resp.json()["id"])


def _external_srs(http: httpx.Client, patient_id: str, mark: float, days_ago: int) -> str:
    """A response completed elsewhere (no identifier of ours): the monitor scores it."""
    return _post(
        http,
        {
            "resourceType": QR,
            "questionnaire": f"{SRS}|1.0.0",
            "status": "completed",
            "subject": {"reference": f"Patient/{patient_id}"},
            "authored": (NOW - timedelta(days=days_ago)).isoformat(),
            "item": [
                {"linkId": q, "answer": [{"valueDecimal": mark}]} for q in ("q1", "q2", "q3", "q4")
            ],
        },
    )


def _our_series(tmp: Path) -> Path:
    records = [
        {
            "key": f"bulk-srs-{week}",
            "instrument": "srs",
            "authored": (NOW - timedelta(weeks=4 - week)).isoformat(),
            "answers": {q: str(mark) for q in ("q1", "q2", "q3", "q4")},
        }
        for week, mark in enumerate([9.6, 9.7, 9.4, 7.8])
    ]
    doc = {"defaults": {"patient": {"system": MRN, "value": "MRN-1001"}}, "assessments": records}
    path = tmp / "series.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def clinic_data(
    fhir_base_url: str, published_clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> dict[str, str]:
    """A falling series of ours for one of the example clinic's clients, and a falling
    series completed elsewhere for another patient."""
    with _api(fhir_base_url, tmp_path / "push.sqlite3") as api:
        assert api.push_assessments([_our_series(tmp_path)]).ok
    patient = _post(
        fhir_http, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "SYN-B1"}]}
    )
    ids = {
        f"ext{n}": _external_srs(fhir_http, patient, mark, days)
        for n, (mark, days) in enumerate([(9.6, 21), (9.5, 14), (7.5, 2)])
    }
    return {"patient": patient, **ids}


def _triggers(result: MonitorResult) -> list[tuple[str, str, str | None, str]]:
    return sorted(
        (o.patient_id, t.rule_id, t.focus_key, t.message)
        for o in result.patients
        for t in o.triggers
    )


def test_the_monitor_through_export_wants_exactly_the_alerts_of_the_paged_pull(
    fhir_base_url: str, clinic_data: dict[str, str], fhir_http: httpx.Client, tmp_path: Path
) -> None:
    with _api(fhir_base_url, tmp_path / "bulk.sqlite3", bulk_threshold=5) as api:
        bulk = api.monitor()
    with _api(fhir_base_url, tmp_path / "paged.sqlite3") as api:
        paged = api.monitor()

    assert bulk.ok, bulk.failures
    assert paged.ok, paged.failures
    assert bulk.pulled_via is not None
    assert bulk.pulled_via.startswith("pulled via bulk $export (")
    assert bulk.pulled_via.endswith(" to pull, over bulk_threshold 5)")
    assert paged.pulled_via is not None
    assert paged.pulled_via.startswith("pulled via paged search (")
    assert paged.pulled_via.endswith(" to pull, bulk_threshold 10000)")
    # the same responses, the same scores, the same rules firing for the same check-ins
    assert bulk.pulled == paged.pulled == 7
    assert bulk.external == paged.external == 3
    assert bulk.watermark == paged.watermark
    assert _triggers(bulk) == _triggers(paged)
    assert any(p == clinic_data["patient"] for p, *_ in _triggers(bulk))
    # the bulk run wrote the alerts; the paged run, on the same data, wants exactly those
    assert bulk.alerts["new"] > 0
    assert paged.alerts["new"] == paged.alerts["recovered"] == paged.alerts["changed"] == 0
    assert paged.alerts["unchanged"] == bulk.alerts["new"]


def test_a_server_without_export_is_pulled_by_paged_search(
    fhir_profile_url: Any, clinic_data: dict[str, str], tmp_path: Path
) -> None:
    base = fhir_profile_url("no-etag")
    with _api(base, tmp_path / "state.sqlite3", bulk_threshold=0) as api:
        result = api.monitor()
    assert result.ok, result.failures
    assert result.pulled_via == "pulled via paged search (the server offers no $export)"
    assert result.external == 3


def _export(client: FhirClient, request: ExportRequest) -> Iterator[dict[str, Any]]:
    with BulkExport(client, request, policy=FAST) as job:
        manifest = job.wait()
        assert manifest.requires_access_token is True
        yield from job.resources(manifest)
        assert job.problems == []
        assert job.issues(manifest) == []


def test_export_filters_by_type_since_and_type_filter_and_a_cancelled_job_is_gone(
    fhir_base_url: str, clinic_data: dict[str, str], fhir_http: httpx.Client
) -> None:
    patient = clinic_data["patient"]
    with FhirClient(fhir_base_url) as client:
        ours = list(
            _export(
                client,
                ExportRequest(types=(QR,), type_filters=(f"{QR}?subject=Patient/{patient}",)),
            )
        )
        assert sorted(r["id"] for r in ours) == sorted(
            clinic_data[k] for k in ("ext0", "ext1", "ext2")
        )
        future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert list(_export(client, ExportRequest(types=(QR,), since=future))) == []
        patients = list(_export(client, ExportRequest(types=("Patient",), patient_level=True)))
        assert patient in {r["id"] for r in patients}
        assert {r["resourceType"] for r in patients} == {"Patient"}

        # leaving the block before the job finished cancels it on the server
        with BulkExport(client, ExportRequest(types=(QR,)), policy=FAST) as job:
            status_url = job.start()
        assert fhir_http.get(status_url).status_code == 404
