"""Which mapping files ``alliance-fhir validate`` knows: the one place the table is composed.

The instruments package knows instruments and overlays; goal plans and alliance rules belong
to layers it must not import, so the full table is put together here, in the application
layer, and passed to ``validate_paths`` explicitly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alliance_fhir.exceptions import Problem
from alliance_fhir.goals import plans_from_data
from alliance_fhir.inputs import Positions
from alliance_fhir.instruments.library import (
    INSTRUMENT_KINDS,
    FileKind,
    InstrumentLibrary,
    ValidationContext,
    validate_paths,
)
from alliance_fhir.monitoring.rules import is_rule_file, validate_rules_document

__all__ = ["FILE_KINDS", "validate_files"]


def _is_goal_plan(data: Any) -> bool:
    return isinstance(data, dict) and ("plans" in data or ("goals" in data and "key" in data))


def _validate_goal_plan(
    path: Path, data: Any, pos: Positions, context: ValidationContext
) -> list[Problem]:
    return plans_from_data(data, pos)[1]


#: Every kind of file ``validate`` recognises, in validation order.
FILE_KINDS: tuple[FileKind, ...] = (
    *INSTRUMENT_KINDS,
    FileKind("goal plan", _is_goal_plan, _validate_goal_plan, "goal plan"),
    FileKind("rule", is_rule_file, validate_rules_document, "rule"),
)


def validate_files(paths: Sequence[Path], library: InstrumentLibrary) -> list[Problem]:
    """Problems in instrument, overlay, goal-plan and rule files (empty when all are valid)."""
    return validate_paths(paths, library, FILE_KINDS)
