"""Alerts merged three ways against HAPI: a clinician's edit of our Flag/Task (a completed or
cancelled Task, a changed priority) is never undone by the monitor, and a field both sides
changed is a conflict the run and ``status`` name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir.api import AllianceFhir, MonitorResult
from alliance_fhir.app.monitor import Monitor

from .clinickit import make_api
from .test_monitoring_integration import _new_patient, _ours, _srs_file

FHIR_JSON = {"Content-Type": "application/fhir+json", "Cache-Control": "no-cache"}


@pytest.fixture
def api(fhir_base_url: str, published_clinic: Path, tmp_path: Path) -> Iterator[AllianceFhir]:
    with make_api(fhir_base_url, tmp_path / "state.sqlite3") as instance:
        yield instance


def _alert(http: httpx.Client, rtype: str, kind: str, rule: str, patient: str) -> dict[str, Any]:
    found = [
        r for r in _ours(http, rtype, kind) if r["identifier"][0]["value"] == f"{rule}:{patient}"
    ]
    assert len(found) == 1, found
    return found[0]


def _clinician_edits(http: httpx.Client, resource: dict[str, Any], **fields: Any) -> None:
    """What a clinician does in the EHR: a plain PUT of the resource with some fields changed."""
    body = {k: v for k, v in resource.items() if k != "meta"} | fields
    resp = http.put(f"/{resource['resourceType']}/{resource['id']}", json=body, headers=FHIR_JSON)
    resp.raise_for_status()


def _run(api: AllianceFhir) -> MonitorResult:
    result = api.monitor()
    assert result.ok, result.failures
    return result


def test_a_task_the_clinician_completed_stays_completed_and_their_priority_stays(
    api: AllianceFhir, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    patient = _new_patient(fhir_http, "SYN-0101")
    assert api.push_assessments(
        [_srs_file(tmp_path, "SYN-0101", [9.6, 9.7, 9.4, 7.8], first_week=0)]
    ).ok
    assert _run(api).alerts["new"] == 2
    below = _alert(fhir_http, "Task", "alert-task", "srs-below-cutoff", patient)
    drop = _alert(fhir_http, "Task", "alert-task", "srs-drop", patient)
    _clinician_edits(fhir_http, below, status="completed")
    _clinician_edits(fhir_http, drop, priority="routine")

    # the rules still fire on a new, much lower check-in: both alerts change
    assert api.push_assessments([_srs_file(tmp_path, "SYN-0101", [5.0], first_week=4)]).ok
    again = _run(api)

    assert again.alerts["changed"] == 2
    below_tasks = [
        t
        for t in _ours(fhir_http, "Task", "alert-task")
        if t["identifier"][0]["value"] == f"srs-below-cutoff:{patient}"
    ]
    assert [t["status"] for t in below_tasks] == ["completed"]  # not reopened, no second one
    drop_now = _alert(fhir_http, "Task", "alert-task", "srs-drop", patient)
    assert drop_now["status"] == "requested"
    assert drop_now["priority"] == "routine"  # the clinician's, not our "urgent" again
    assert drop_now["description"] != drop["description"]  # ours: only we changed it


@pytest.mark.parametrize("closed_as", ["cancelled", "rejected"])
def test_a_task_closed_by_hand_while_the_monitor_runs_is_a_conflict_not_reopened(
    api: AllianceFhir, fhir_http: httpx.Client, tmp_path: Path, closed_as: str
) -> None:
    mrn = f"SYN-02{len(closed_as):02d}"
    patient = _new_patient(fhir_http, mrn)
    assert api.push_assessments([_srs_file(tmp_path, mrn, [9.6, 9.7, 9.4, 7.8], first_week=0)]).ok
    assert _run(api).alerts["new"] == 2
    monitor = Monitor(api.client, api.store, api.library, api.settings, api.rules)
    seen_open = monitor.alerts.open_alerts(patient)[patient]  # the monitor has read them ...
    drop = _alert(fhir_http, "Task", "alert-task", "srs-drop", patient)
    _clinician_edits(fhir_http, drop, status=closed_as)  # ... then the clinician closes one
    assert api.push_assessments([_srs_file(tmp_path, mrn, [9.5], first_week=4)]).ok

    outcome = monitor.evaluate_patient(patient, seen_open)

    assert len(outcome.decisions) == 2
    drop_now = _alert(fhir_http, "Task", "alert-task", "srs-drop", patient)
    assert drop_now["status"] == closed_as
    assert drop_now["meta"]["versionId"] == "2"  # nothing of ours written over it
    assert monitor.alerts.conflicts == [f"Task/{drop['id']}: status"]
    below_now = _alert(fhir_http, "Task", "alert-task", "srs-below-cutoff", patient)
    assert below_now["status"] == "completed"  # the other alert recovered as before
    flag = _alert(fhir_http, "Flag", "alert-flag", "srs-drop", patient)
    assert flag["status"] == "inactive"
    conflicts = [c for c in api.status().conflicts if c.kind == "alert-task"]
    assert [(c.key, c.conflict_fields) for c in conflicts] == [(f"srs-drop:{patient}", ("status",))]
