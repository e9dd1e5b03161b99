"""The clinician's plain-text view of a plan."""

from __future__ import annotations

from alliance_fhir.goals import render_plan_text

from .conftest import load_example


def test_render_shows_what_a_clinician_needs() -> None:
    text = render_plan_text(load_example("plan-mrn-1001.yaml"))
    assert "Goal plan plan-1001-2024: Getting my mornings back" in text
    assert "1. \u201cI want to walk Biscuit every morning again, like I used to.\u201d" in text
    assert "Agreement: client agrees (priority high); clinician 1234567893 agrees" in text
    assert "Strengths: Loves her dog; Kept walking through a hard winter in 2021" in text
    assert "Target: Morning walks per week: 5 walks per week by 2024-05-01" in text
    assert "- [completed, achieved] \u201cWalk to the end of the street" in text
    assert "(due 2024-03-15)" in text
    assert "Last progress note (2024-03-04): Four walks last week" in text
    assert "GAS +1 on 2024-03-04 (before: 0 on 2024-02-05)" in text
    assert "2024-03-04: T = 60.0 (1 goal rated)" in text
    assert "Target: Sunday calls per month: 2 to 4 calls per month by 2024-06-30" in text


def test_nested_milestones_are_indented_deeper() -> None:
    lines = render_plan_text(load_example("plan-mrn-1002.yaml")).splitlines()
    four = next(line for line in lines if "Ride four stops" in line)
    two = next(line for line in lines if "Ride two stops" in line)
    indent = len(four) - len(four.lstrip())
    assert len(two) - len(two.lstrip()) > indent
