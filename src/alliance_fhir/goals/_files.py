"""Reading goal plans from YAML/JSON plan files.

A file holds one plan (a mapping with ``key``) or several (``plans: [...]``). Reading never
raises for bad content: it returns ``(plans, problems)``.

* A plan whose header (key, patient, clinicians, status, period, ...) is bad is skipped whole.
* A top-level goal with a bad field, or breaking a consistency rule anywhere in it or its
  milestones, is skipped with its milestones; the plan keeps its other goals.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.goals._lifecycle import RuleProblem, check_plan
from alliance_fhir.goals._model import Goal, Plan, PlanHeader
from alliance_fhir.inputs import Positions, load_document, problems_from_validation


def load_plan_file(path: Path) -> tuple[list[Plan], list[Problem]]:
    """Plans in one YAML/JSON file, and the problems that kept parts of it out."""
    try:
        data, pos = load_document(path)
    except InvalidInputError as exc:
        return [], exc.problems
    return plans_from_data(data, pos)


def plans_from_data(data: Any, pos: Positions) -> tuple[list[Plan], list[Problem]]:
    """Plans from an already parsed document (``pos`` locates its lines)."""
    if isinstance(data, dict) and "plans" in data:
        extra = sorted(str(k) for k in data if k != "plans")
        problems = [pos.problem((k,), k, "unexpected key next to plans") for k in extra]
        items = data["plans"]
        if not isinstance(items, list):
            return [], [*problems, pos.problem(("plans",), "plans", "must be a list of plans")]
        plans: list[Plan] = []
        for i, item in enumerate(items):
            plan, found = build_plan(item, pos, ("plans", i))
            problems.extend(found)
            if plan is not None:
                plans.append(plan)
        return plans, problems
    plan, problems = build_plan(data, pos, ())
    return ([plan] if plan is not None else []), problems


def build_plan(
    raw: Any, pos: Positions, prefix: Sequence[int | str]
) -> tuple[Plan | None, list[Problem]]:
    """One plan: header first (all or nothing), then each top-level goal on its own."""
    prefix = tuple(prefix)
    if not isinstance(raw, dict):
        return None, [pos.problem(prefix, "", "a plan must be a mapping")]
    goals_raw = raw.get("goals", [])
    if not isinstance(goals_raw, list):
        return None, [pos.problem((*prefix, "goals"), "goals", "must be a list of goals")]
    try:
        header = PlanHeader.model_validate({k: v for k, v in raw.items() if k != "goals"})
    except ValidationError as exc:
        return None, problems_from_validation(exc, pos, prefix)

    problems: list[Problem] = []
    good: list[tuple[int, Goal]] = []
    for i, item in enumerate(goals_raw):
        try:
            good.append((i, Goal.model_validate(item)))
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, pos, (*prefix, "goals", i)))
    plan = Plan.model_validate({**header.model_dump(), "goals": [g for _, g in good]})
    original = [i for i, _ in good]

    def locate(rule: RuleProblem) -> Problem:
        path = list(rule.path)
        if rule.top_goal is not None:
            path[1] = original[rule.top_goal]
        return pos.problem((*prefix, *path), rule.field, rule.reason)

    rules = check_plan(plan, for_file=True)
    problems.extend(locate(r) for r in rules)
    bad = {r.top_goal for r in rules}
    if None in bad:  # a rule about the plan itself: nothing of it can be trusted
        return None, problems
    kept = [g for i, g in enumerate(plan.goals) if i not in bad]
    return plan.model_copy(update={"goals": kept}), problems
