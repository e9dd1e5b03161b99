"""Collaborative goals: the domain model, its lifecycle, plan files and CSV, a text view.

The FHIR mapping lives in ``alliance_fhir.adapters.goals``; the file format and CSV map are
described in ``docs/goals.md``.
"""

from __future__ import annotations

from pathlib import Path

from alliance_fhir.exceptions import Problem
from alliance_fhir.goals._csv import FieldMap, load_field_map, load_plans_csv
from alliance_fhir.goals._files import load_plan_file, plans_from_data
from alliance_fhir.goals._gas import DEFAULT_RHO, GasSummary, gas_summaries, gas_t_score
from alliance_fhir.goals._lifecycle import (
    TRANSITIONS,
    RuleProblem,
    allowed_transitions,
    check_plan,
    transition,
    validate_plan,
)
from alliance_fhir.goals._model import (
    Acceptance,
    Achievement,
    Addressed,
    Agreement,
    Concept,
    GasRating,
    Goal,
    GoalCoding,
    Lifecycle,
    Party,
    Plan,
    PlanHeader,
    PlanStatus,
    Priority,
    ProgressNote,
    Stance,
    Target,
)
from alliance_fhir.goals._render import render_plan_text, render_plans_text, target_text


def load_plans(path: Path) -> tuple[list[Plan], list[Problem]]:
    """Plans from a ``.csv`` file (default field map) or a YAML/JSON plan file."""
    if path.suffix.lower() == ".csv":
        return load_plans_csv(path)
    return load_plan_file(path)


__all__ = [
    "DEFAULT_RHO",
    "TRANSITIONS",
    "Acceptance",
    "Achievement",
    "Addressed",
    "Agreement",
    "Concept",
    "FieldMap",
    "GasRating",
    "GasSummary",
    "Goal",
    "GoalCoding",
    "Lifecycle",
    "Party",
    "Plan",
    "PlanHeader",
    "PlanStatus",
    "Priority",
    "ProgressNote",
    "RuleProblem",
    "Stance",
    "Target",
    "allowed_transitions",
    "check_plan",
    "gas_summaries",
    "gas_t_score",
    "load_field_map",
    "load_plan_file",
    "load_plans",
    "load_plans_csv",
    "plans_from_data",
    "render_plan_text",
    "render_plans_text",
    "target_text",
    "transition",
    "validate_plan",
]
