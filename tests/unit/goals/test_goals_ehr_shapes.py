"""Goals as EHRs write them: the tolerant reader's rules, and how they are shown."""

from __future__ import annotations

from typing import Any

import pytest

from alliance_fhir.adapters.goals.from_fhir import read_goals, read_plan
from alliance_fhir.app.reports import report_goals
from alliance_fhir.goals import Lifecycle, render_plans_text, target_text

NS = "http://alliance-fhir.org/fhir/identifier"
UCUM = "http://unitsofmeasure.org"


def _goal(gid: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "id": gid,
        "lifecycleStatus": "active",
        "description": {"text": f"goal {gid}"},
        "subject": {"reference": "Patient/7"},
        **fields,
    }


def _plan(pid: str, *goal_ids: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "id": pid,
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/7"},
        "author": {"reference": "Practitioner/3"},
        "goal": [{"reference": f"Goal/{g}"} for g in goal_ids],
    }


def _target_of(target: dict[str, Any]) -> str:
    usable, problems = read_goals([_goal("1", target=[target])])
    assert problems == []
    plan, found = read_plan(_plan("p", "1"), usable)
    assert found == []
    assert plan is not None
    return target_text(plan.goals[0].targets[0])


@pytest.mark.parametrize(
    ("target", "text"),
    [
        (
            {
                "measure": {"text": "Days sober"},
                "detailQuantity": {"value": 30, "comparator": ">=", "unit": "d"},
                "dueDate": "2030-06-01",
            },
            "Days sober: at least 30 d by 2030-06-01",
        ),
        (
            {"measure": {"text": "Drinks"}, "detailQuantity": {"value": 2, "comparator": "<"}},
            "Drinks: below 2",
        ),
        (
            {
                "measure": {"text": "Weight"},
                "detailRange": {"low": {"value": 160, "unit": "lbs"}, "high": {"value": 180}},
                "dueDuration": {"value": 12, "unit": "wk", "system": UCUM, "code": "wk"},
            },
            "Weight: 160 to 180 lbs within 12 wk",
        ),
        ({"measure": {"text": "Calls"}, "detailString": "weekly"}, "Calls: weekly"),
        (
            {
                "measure": {"text": "Sleep"},
                "detailCodeableConcept": {"coding": [{"code": "x", "display": "restful"}]},
            },
            "Sleep: restful",
        ),
        (
            {
                "measure": {"text": "Walks"},
                "detailRatio": {
                    "numerator": {"value": 3},
                    "denominator": {"value": 1, "unit": "wk"},
                },
            },
            "Walks: 3 per 1 wk",
        ),
        ({"detailString": "no measure given"}, "Measure not stated: no measure given"),
        ({"dueDuration": {"value": 3, "unit": "mo"}}, "within 3 mo"),
    ],
)
def test_every_target_shape_is_shown_as_written(target: dict[str, Any], text: str) -> None:
    assert _target_of(target) == text


@pytest.mark.parametrize("status", [s.value for s in Lifecycle])
def test_every_lifecycle_status_reads(status: str) -> None:
    usable, problems = read_goals([_goal("1", lifecycleStatus=status)])
    assert problems == []
    plan, _ = read_plan(_plan("p", "1"), usable)
    assert plan is not None
    assert str(plan.goals[0].lifecycle_status) == status


def test_description_as_coding_only_and_no_identifier() -> None:
    coded = _goal(
        "1",
        description={
            "coding": [
                {"system": "http://snomed.info/sct", "code": "281004", "display": "Weight loss"}
            ]
        },
    )
    usable, _ = read_goals([coded])
    plan, _ = read_plan(_plan("p", "1"), usable)
    assert plan is not None
    goal = plan.goals[0]
    assert goal.client_words == "Weight loss"
    assert goal.key == "ehr-1"


def test_our_identifier_with_a_value_in_another_shape_is_a_problem_not_a_traceback() -> None:
    odd = _goal("9", identifier=[{"system": f"{NS}/goal", "value": "EHR goal #7 (imported)"}])
    usable, problems = read_goals([_goal("1"), odd])
    assert [g["id"] for g in usable] == ["1"]
    assert [(p.location, p.path, p.field) for p in problems] == [
        ("Goal/9", "Goal.identifier", "identifier")
    ]
    assert "EHR goal #7" not in problems[0].reason


def test_an_unknown_status_and_a_refused_target_name_the_goal_and_the_path() -> None:
    bad_range = {
        "measure": {"text": "x"},
        "detailRange": {"low": {"value": 9}, "high": {"value": 1}},
    }
    _, problems = read_goals(
        [_goal("4", lifecycleStatus="paused"), _goal("5", target=[{}, bad_range])]
    )
    assert [(p.location, p.path) for p in problems] == [
        ("Goal/4", "Goal.lifecycleStatus"),
        ("Goal/5", "Goal.target[1]"),
    ]
    assert problems[1].reason == "low is above high"


def test_an_element_in_a_shape_fhir_does_not_allow_is_a_problem() -> None:
    _, problems = read_goals([_goal("6", description="just a string")])
    assert [(p.location, p.path) for p in problems] == [("Goal/6", "Goal")]


def test_a_plan_naming_no_clinician_is_a_problem_with_its_path() -> None:
    plan = {**_plan("p", "1"), "author": None}
    found, problems = read_plan(plan, [_goal("1")])
    assert found is None
    assert [(p.location, p.path) for p in problems] == [("CarePlan/p", "CarePlan.author")]


def test_a_goal_linked_from_two_plans_is_shown_once() -> None:
    usable, _ = read_goals([_goal("1"), _goal("2")])
    first, _ = read_plan(_plan("a", "1", "2"), usable)
    second, _ = read_plan(_plan("b", "2"), usable)
    assert first is not None
    assert second is not None
    text = render_plans_text([first, second])
    assert text.count("\u201cgoal 2\u201d") == 2
    assert "2. \u201cgoal 2\u201d" in text
    assert "1. \u201cgoal 2\u201d (shown under goal plan ehr-a)" in text
    assert [g.description for g in report_goals([first, second])] == ["goal 1", "goal 2"]
