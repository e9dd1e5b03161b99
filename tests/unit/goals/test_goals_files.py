"""Reading plan files: good examples load; bad parts are reported precisely and left out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.goals import Lifecycle, load_plan_file, load_plans

from .conftest import LEAD, example_files

HEADER = """\
key: p1
patient: {system: http://example-clinic.org/mrn, value: MRN-1001}
clinicians: [http://hl7.org/fhir/sid/us-npi|1234567893]
status: active
goals:
"""


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_load_cleanly(path: Path) -> None:
    plans, problems = load_plans(path)
    assert problems == []
    assert len(plans) == 1
    assert plans[0].goals


def test_agreement_clinician_defaults_to_the_lead(write: Any) -> None:
    path = write(
        "p.yaml",
        HEADER
        + """\
  - key: g1
    client_words: Sleep better
    proposed_by: client
    lifecycle_status: active
    agreement: {clinician: {status: agree}}
""",
    )
    (plan,), problems = load_plan_file(path)
    assert problems == []
    assert plan.goals[0].agreement is not None
    assert plan.goals[0].agreement.clinician is not None
    assert plan.goals[0].agreement.clinician.clinician == LEAD


def test_contradictory_statuses_are_pinpointed_and_other_goals_proceed(write: Any) -> None:
    path = write(
        "plan.yaml",
        HEADER
        + """\
  - key: fine
    client_words: Walk the dog
    proposed_by: client
    lifecycle_status: active
  - key: muddled
    client_words: Cook twice a week
    proposed_by: both
    lifecycle_status: proposed
    achievement_status: achieved
  - key: parent
    client_words: Run a 5k
    proposed_by: client
    lifecycle_status: completed
    achievement_status: achieved
    milestones:
      - key: step
        client_words: Run 1k
        proposed_by: client
        lifecycle_status: active
  - key: typo
    client_words: Read a book
    proposed_by: client
    lifecycle_status: finished
""",
    )
    (plan,), problems = load_plan_file(path)
    assert [g.key for g in plan.goals] == ["fine"]
    assert plan.goals[0].lifecycle_status is Lifecycle.ACTIVE
    found = {(p.line, p.path, p.field) for p in problems}
    assert found == {
        (14, "goals[1].achievement_status", "achievement_status"),
        (24, "goals[2].milestones[0].lifecycle_status", "lifecycle_status"),
        (28, "goals[3].lifecycle_status", "lifecycle_status"),
    }
    by_path = {p.path: p for p in problems}
    assert (
        "proposed goal has no achievement status" in by_path["goals[1].achievement_status"].reason
    )
    assert (
        "its goal parent is completed" in by_path["goals[2].milestones[0].lifecycle_status"].reason
    )
    assert all(p.location == str(path) for p in problems)
    assert str(by_path["goals[3].lifecycle_status"]).startswith(f"{path}:28 at goals[3]")


def test_bad_header_skips_only_that_plan(write: Any) -> None:
    path = write(
        "plans.yaml",
        """\
plans:
  - key: ok
    patient: http://example-clinic.org/mrn|MRN-1002
    clinicians: [http://hl7.org/fhir/sid/us-npi|1245319599]
    status: active
  - key: broken
    patient: MRN-1003
    clinicians: []
    status: active
""",
    )
    plans, problems = load_plan_file(path)
    assert [p.key for p in plans] == ["ok"]
    assert {(p.line, p.field) for p in problems} == {(7, "patient"), (8, "clinicians")}


def test_unknown_field_and_repeated_key(write: Any) -> None:
    path = write(
        "plan.yaml",
        HEADER
        + """\
  - key: a
    client_words: One
    proposed_by: client
    lifecycle_status: active
    colour: blue
  - key: b
    client_words: Two
    proposed_by: client
    lifecycle_status: active
  - key: b
    client_words: Three
    proposed_by: client
    lifecycle_status: active
""",
    )
    (plan,), problems = load_plan_file(path)
    assert [g.client_words for g in plan.goals] == ["Two"]
    assert {(p.line, p.field) for p in problems} == {(10, "colour"), (15, "key")}


def test_unreadable_file_is_a_problem_not_a_crash(write: Any) -> None:
    path = write("bad.yaml", "key: [unclosed\n")
    plans, problems = load_plan_file(path)
    assert plans == []
    assert problems[0].line is not None
