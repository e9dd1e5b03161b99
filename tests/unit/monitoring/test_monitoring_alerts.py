"""Alerts: one Flag + Task per rule and client, never duplicated, closed on recovery."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from monitoringkit import default_rules, instrument, totals, when

from alliance_fhir.adapters import fhirjson
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.monitoring.alerts import (
    PRIORITY,
    AlertState,
    OpenAlert,
    closed_flag,
    completed_task,
    decide_alerts,
    flag_resource,
    rule_concepts,
    task_resource,
)
from alliance_fhir.monitoring.evaluate import Trigger, evaluate, recovery_note

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2024, 2, 19, 9, 30, tzinfo=UTC)
LATER = datetime(2024, 3, 4, 9, 30, tzinfo=UTC)
PATIENT = {"reference": "Patient/p-17"}
CLINICIAN = {"reference": "Practitioner/dr-4"}
QR = {"reference": "QuestionnaireResponse/qr-88"}


def srs_triggers(values: list[float | None], patient: str = "P-1") -> list[Trigger]:
    return evaluate(
        default_rules(),
        instrument("srs"),
        totals(values),
        patient_key=patient,
        care_plan_active=True,
        as_of=when(len(values)),
    )


def trigger(rule_id: str, values: list[float | None]) -> Trigger:
    return next(t for t in srs_triggers(values) if t.rule_id == rule_id)


def check_golden(name: str, resource: dict[str, object]) -> None:
    text = fhirjson.dumps(resource, indent=2) + "\n"
    path = GOLDEN / name
    if os.environ.get("ALLIANCE_FHIR_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def test_flag_and_task_match_their_golden_files_and_are_byte_stable() -> None:
    t = trigger("srs-drop", [38.0, 33.5])
    flag = flag_resource(t, subject_ref=PATIENT, now=NOW)
    task = task_resource(t, subject_ref=PATIENT, owner_ref=CLINICIAN, focus_ref=QR, now=NOW)
    check_golden("flag-srs-drop.json", flag)
    check_golden("task-srs-drop.json", task)
    again = trigger("srs-drop", [38.0, 33.5])
    assert fhirjson.dumps(flag_resource(again, subject_ref=PATIENT, now=NOW)) == fhirjson.dumps(
        flag
    )
    assert fhirjson.dumps(
        task_resource(again, subject_ref=PATIENT, owner_ref=CLINICIAN, focus_ref=QR, now=NOW)
    ) == fhirjson.dumps(task)


def test_flag_and_task_share_one_key_per_rule_and_patient() -> None:
    t = trigger("srs-below-cutoff", [30.0])
    flag = flag_resource(t, subject_ref=PATIENT, now=NOW, namespace="urn:clinic")
    task = task_resource(t, subject_ref=PATIENT, now=NOW, namespace="urn:clinic")
    assert flag["identifier"] == [
        {"use": "official", "system": "urn:clinic/alert-flag", "value": "srs-below-cutoff:P-1"}
    ]
    assert task["identifier"][0]["system"] == "urn:clinic/alert-task"
    assert task["identifier"][0]["value"] == "srs-below-cutoff:P-1"
    assert flag["category"][0]["coding"][0]["code"] == "behavioral"
    assert flag["code"]["coding"][0]["code"] == "alliance-rule-srs-below-cutoff"
    assert flag["code"]["text"] == t.message
    # a missed check-in has no focus and an unknown clinician leaves owner out
    assert "focus" not in task
    assert "owner" not in task


def test_priority_follows_severity() -> None:
    assert PRIORITY == {"low": "routine", "medium": "urgent", "high": "asap"}
    t = trigger("srs-below-cutoff", [30.0])
    for severity, priority in PRIORITY.items():
        changed = Trigger(**{**t.__dict__, "severity": severity})
        assert task_resource(changed, subject_ref=PATIENT, now=NOW)["priority"] == priority


def test_canonical_base_moves_the_code_system() -> None:
    t = trigger("srs-below-cutoff", [30.0])
    flag = flag_resource(t, subject_ref=PATIENT, now=NOW, canonical_base="https://c.example/fhir")
    system = flag["code"]["coding"][0]["system"]
    assert system == "https://c.example/fhir/CodeSystem/alliance-fhir-codes"


def test_new_then_repeat_then_changed_then_recovered() -> None:
    # run 1: a low score -> a new alert
    run1 = srs_triggers([38.0, 35.0])
    (decision,) = [d for d in decide_alerts(run1, []) if d.key == "srs-below-cutoff:P-1"]
    assert decision.state is AlertState.NEW
    assert decision.trigger is not None
    assert decision.open is None
    task = task_resource(decision.trigger, subject_ref=PATIENT, focus_ref=QR, now=NOW)
    opened = [
        OpenAlert(t.rule_id, t.patient_key, f"f-{t.rule_id}", f"t-{t.rule_id}", t.message, NOW)
        for t in run1
    ]

    # run 2: same data -> nothing to write, no duplicate
    decisions = decide_alerts(srs_triggers([38.0, 35.0]), opened)
    assert {d.state for d in decisions} == {AlertState.UNCHANGED}
    assert len(decisions) == len(opened)

    # run 3: another low score -> the same alert, with the new numbers
    run3 = srs_triggers([38.0, 35.0, 34.0])
    (changed,) = [d for d in decide_alerts(run3, opened) if d.key == "srs-below-cutoff:P-1"]
    assert changed.state is AlertState.CHANGED
    assert changed.open is not None
    assert changed.trigger is not None
    updated = task_resource(
        changed.trigger, subject_ref=PATIENT, focus_ref=QR, now=LATER, since=changed.open.since
    )
    assert updated["identifier"] == task["identifier"]
    assert "34" in updated["description"]
    assert updated["authoredOn"] == "2024-02-19T09:30:00Z"
    assert updated["lastModified"] == "2024-03-04T09:30:00Z"

    # run 4: the score recovers -> close the Flag, complete the Task
    recovered = decide_alerts(srs_triggers([38.0, 35.0, 34.0, 37.5]), opened)
    (closing,) = [d for d in recovered if d.key == "srs-below-cutoff:P-1"]
    assert closing.state is AlertState.RECOVERED
    assert closing.trigger is None
    assert closing.open == opened[0]


def test_recovery_closes_the_servers_flag_and_task() -> None:
    t = trigger("srs-below-cutoff", [30.0])
    flag = {"id": "f1", "meta": {"versionId": "3"}} | flag_resource(t, subject_ref=PATIENT, now=NOW)
    task = {"id": "t1", "meta": {"versionId": "2"}} | task_resource(
        t, subject_ref=PATIENT, focus_ref=QR, now=NOW
    )
    rule = next(r for r in default_rules() if r.id == "srs-below-cutoff")
    note = recovery_note(rule, instrument("srs"), totals([30.0, 37.5]), care_plan_active=True)
    assert note.startswith("Scores recovered: 'Session rating below 36' no longer applies;")
    assert "37.5 on 2024-01-15" in note

    closed = closed_flag(flag, now=LATER)
    assert list(closed)[:2] == ["resourceType", "id"]
    assert closed["status"] == "inactive"
    assert closed["period"] == {"start": "2024-02-19T09:30:00Z", "end": "2024-03-04T09:30:00Z"}
    assert "meta" not in closed
    assert flag["status"] == "active"  # the input is not modified

    done = completed_task(task, now=LATER, note=note)
    assert done["status"] == "completed"
    assert done["note"] == [{"time": "2024-03-04T09:30:00Z", "text": note}]
    assert done["identifier"] == task["identifier"]
    check_golden("task-srs-below-cutoff-completed.json", done)


def test_recovery_respects_the_evaluated_scope() -> None:
    other = OpenAlert("srs-below-cutoff", "P-2", "f9", "t9", "old", NOW)
    retired = OpenAlert("old-rule", "P-1", "f8", "t8", "old", NOW)
    decisions = decide_alerts([], [other, retired], patients={"P-1"}, rule_ids={"srs-drop"})
    assert decisions == []
    (d,) = decide_alerts([], [other], patients={"P-2"})
    assert d.state is AlertState.RECOVERED


def test_two_triggers_for_one_alert_is_refused() -> None:
    t = trigger("srs-below-cutoff", [30.0])
    with pytest.raises(ValueError, match="two triggers"):
        decide_alerts([t, t], [])


def test_completed_task_via_the_builder_validates() -> None:
    t = trigger("srs-below-cutoff", [30.0])
    task = task_resource(
        t, subject_ref=PATIENT, now=LATER, since=NOW, status="completed", note="recovered"
    )
    assert task["status"] == "completed"
    assert task["note"][0]["text"] == "recovered"
    flag = flag_resource(t, subject_ref=PATIENT, now=LATER, since=NOW, status="inactive")
    assert flag["period"]["end"] == "2024-03-04T09:30:00Z"


def test_naive_now_is_refused() -> None:
    t = trigger("srs-below-cutoff", [30.0])
    with pytest.raises(InvalidInputError, match="timezone"):
        flag_resource(t, subject_ref=PATIENT, now=NOW.replace(tzinfo=None))


def test_rule_concepts_for_the_code_system() -> None:
    concepts = rule_concepts(default_rules())
    codes = [c["code"] for c in concepts]
    assert codes == sorted(codes)
    assert "alliance-rule-trc-client-heard-floor" in codes
    assert all(c["display"] and c["definition"] for c in concepts)
