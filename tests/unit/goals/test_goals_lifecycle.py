"""Lifecycle transitions and the rules that keep statuses from contradicting each other."""

from __future__ import annotations

from datetime import date

import pytest

from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.goals import (
    Achievement,
    Goal,
    Lifecycle,
    allowed_transitions,
    check_plan,
    transition,
    validate_plan,
)

from .conftest import make_plan


def goal(status: str, **fields: object) -> Goal:
    return Goal.model_validate(
        {"key": "g", "client_words": "x", "lifecycle_status": status, **fields}
    )


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("proposed", "accepted"),
        ("proposed", "rejected"),
        ("accepted", "active"),
        ("active", "on-hold"),
        ("on-hold", "active"),
        ("active", "cancelled"),
        ("completed", "entered-in-error"),
    ],
)
def test_allowed_transitions(start: str, end: str) -> None:
    moved = transition(goal(start), end, on=date(2024, 5, 1))
    assert moved.lifecycle_status == Lifecycle(end)
    assert moved.status_date == date(2024, 5, 1)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("proposed", "completed"),
        ("proposed", "on-hold"),
        ("completed", "active"),
        ("cancelled", "active"),
        ("rejected", "accepted"),
        ("on-hold", "completed"),
        ("entered-in-error", "active"),
    ],
)
def test_invalid_transitions_are_refused(start: str, end: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        transition(goal(start), end)
    problem = caught.value.problems[0]
    assert problem.field == "lifecycle_status"
    assert f"from {start} to {end}" in problem.reason


def test_same_status_is_a_no_op() -> None:
    g = goal("active")
    assert transition(g, "active") == g


def test_completing_needs_an_outcome() -> None:
    with pytest.raises(InvalidInputError, match="needs an achievement status"):
        transition(goal("active"), "completed")
    done = transition(goal("active"), "completed", achievement=Achievement.ACHIEVED)
    assert done.achievement_status is Achievement.ACHIEVED


def test_completing_a_goal_with_open_milestones_is_refused() -> None:
    parent = goal(
        "active", milestones=[{"key": "m", "client_words": "y", "lifecycle_status": "active"}]
    )
    with pytest.raises(InvalidInputError) as caught:
        transition(parent, "completed", achievement="achieved")
    assert caught.value.problems[0].path == "milestones[0].lifecycle_status"


def test_entered_in_error_is_always_allowed_and_final() -> None:
    for status in Lifecycle:
        if status is not Lifecycle.ENTERED_IN_ERROR:
            assert Lifecycle.ENTERED_IN_ERROR in allowed_transitions(status)
    assert allowed_transitions(Lifecycle.ENTERED_IN_ERROR) == frozenset()


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"lifecycle_status": "proposed", "achievement_status": "achieved"},
            "achievement_status",
            "no achievement status",
        ),
        (
            {"lifecycle_status": "completed", "achievement_status": "improving"},
            "achievement_status",
            "completed goal needs",
        ),
        (
            {"agreement": {"client": {"status": "disagree"}}},
            "lifecycle_status",
            "client disagrees",
        ),
        ({"start": "2024-03-01", "status_date": "2024-02-01"}, "status_date", "before the start"),
        (
            {"gas": [{"on": "2024-03-01", "score": 1}, {"on": "2024-03-01", "score": 0}]},
            "on",
            "second GAS rating",
        ),
        ({"proposed_by": None}, "proposed_by", "who proposed"),
        ({"notes": [{"text": "undated"}]}, "on", "needs a date"),
    ],
)
def test_rules(fields: dict[str, object], field: str, words: str) -> None:
    problems = check_plan(make_plan(**fields))
    assert [p.field for p in problems] == [field]
    assert words in problems[0].reason
    assert problems[0].top_goal == 0


def test_milestone_under_way_before_its_goal_starts() -> None:
    plan = make_plan(
        lifecycle_status="proposed",
        milestones=[
            {"key": "m", "client_words": "y", "proposed_by": "client", "lifecycle_status": "active"}
        ],
    )
    (problem,) = check_plan(plan)
    assert problem.path == ("goals", 0, "milestones", 0, "lifecycle_status")
    assert "only proposed" in problem.reason


def test_completed_plan_needs_closed_goals() -> None:
    plan = make_plan().model_copy(update={"status": "completed"})
    (problem,) = check_plan(plan)
    assert "the plan is completed" in problem.reason


def test_validate_plan_raises_with_paths() -> None:
    plan = make_plan(lifecycle_status="accepted", achievement_status="achieved")
    with pytest.raises(InvalidInputError) as caught:
        validate_plan(plan, source="mine")
    assert str(caught.value.problems[0]).startswith("mine at goals[0].achievement_status")


def test_unknown_agreement_clinician() -> None:
    plan = make_plan(agreement={"clinician": {"status": "agree", "clinician": "Practitioner/9"}})
    (problem,) = check_plan(plan)
    assert problem.field == "clinician"
