"""The three-way merge of our alert Flags and Tasks (``path_rules`` with the owned fields of
app/alert_writer.py): the conflict matrix for each policy over real Task/Flag JSON."""

from __future__ import annotations

from typing import Any

import pytest

from alliance_fhir.app.alert_writer import FLAG_FIELDS, TASK_FIELDS
from alliance_fhir.sync.merge3 import Policy, canonical, merged_update, path_rules

POLICIES: tuple[Policy, ...] = ("skip", "ehr-wins", "ours-wins")
TASK = path_rules(TASK_FIELDS, sets={"note": canonical})
FLAG = path_rules(FLAG_FIELDS)

OURS_TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "7",
    "identifier": [{"system": "urn:x/alert-task", "value": "srs-drop:1"}],
    "status": "requested",
    "intent": "order",
    "priority": "urgent",
    "description": "SRS fell by 6.4",
    "for": {"reference": "Patient/1"},
}


def task(**fields: Any) -> dict[str, Any]:
    return OURS_TASK | fields


@pytest.mark.parametrize("policy", POLICIES)
def test_a_priority_only_the_clinician_changed_is_kept(policy: Policy) -> None:
    base = TASK.owned(task())
    current = task(priority="routine", meta={"versionId": "2"})
    update = merged_update(base, current, task(description="SRS fell by 8"), TASK, policy)
    assert update.conflicts == ()
    assert update.resource is not None
    assert update.resource["priority"] == "routine"
    assert update.resource["description"] == "SRS fell by 8"


@pytest.mark.parametrize("closed", ["completed", "cancelled"])
def test_a_task_the_clinician_closed_is_not_reopened_when_we_only_edit_its_text(
    closed: str,
) -> None:
    base = TASK.owned(task())
    update = merged_update(base, task(status=closed), task(description="new"), TASK, "skip")
    assert update.resource is not None
    assert update.resource["status"] == closed


@pytest.mark.parametrize(
    ("policy", "status", "written"),
    [
        ("skip", "cancelled", False),
        ("ehr-wins", "cancelled", True),
        ("ours-wins", "completed", True),
    ],
)
def test_a_status_both_changed_is_a_conflict_settled_by_the_policy(
    policy: Policy, status: str, written: bool
) -> None:
    base = TASK.owned(task())
    note = {"time": "2026-01-02T00:00:00Z", "text": "Scores recovered"}
    ours = task(status="completed", note=[note], lastModified="2026-01-02T00:00:00Z")
    update = merged_update(base, task(status="cancelled"), ours, TASK, policy)
    assert update.conflicts == ("status",)
    assert (update.resource is not None) is written
    if update.resource is not None:
        assert update.resource["status"] == status
        assert update.resource["note"] == [note]  # only we added it: ours under any policy


def test_notes_the_ehr_added_stay_beside_ours() -> None:
    theirs_note = {"text": "called the client", "authorString": "Dr A"}
    ours_note = {"text": "Scores recovered"}
    base = TASK.owned(task())
    update = merged_update(base, task(note=[theirs_note]), task(note=[ours_note]), TASK, "skip")
    assert update.resource is not None
    assert update.resource["note"] == [ours_note, theirs_note]


def test_an_unchanged_merge_writes_nothing() -> None:
    base = TASK.owned(task())
    update = merged_update(base, task(meta={"versionId": "3"}), task(), TASK, "skip")
    assert update.unchanged
    assert update.resource is None


def test_the_flag_text_is_ours_and_the_ehrs_codings_beside_it_stay() -> None:
    flag = {
        "resourceType": "Flag",
        "id": "3",
        "status": "active",
        "code": {"text": "SRS fell"},
        "period": {"start": "2026-01-01T00:00:00Z"},
    }
    coding = {"system": "http://snomed.info/sct", "code": "225445003"}
    current = flag | {"code": {"coding": [coding], "text": "SRS fell"}}
    ours = flag | {"code": {"text": "SRS fell further"}}
    update = merged_update(FLAG.owned(flag), current, ours, FLAG, "skip")
    assert update.resource is not None
    assert update.resource["code"] == {"coding": [coding], "text": "SRS fell further"}


def test_a_flag_the_clinician_closed_stays_closed_when_we_change_its_text() -> None:
    flag = {"resourceType": "Flag", "id": "3", "status": "active", "code": {"text": "a"}}
    closed = flag | {"status": "inactive", "period": {"end": "2026-01-03T00:00:00Z"}}
    update = merged_update(FLAG.owned(flag), closed, flag | {"code": {"text": "b"}}, FLAG, "skip")
    assert update.resource is not None
    assert (update.resource["status"], update.resource["period"]) == (
        "inactive",
        {"end": "2026-01-03T00:00:00Z"},
    )
