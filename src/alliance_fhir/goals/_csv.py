"""Reading goal plans from CSV through the field map ``mappings/sources/goals-csv.yaml``.

One row per goal or milestone (``parent`` names a milestone's goal). Each problem names the
file, the row's line and the column. The unit that is skipped is the same as for plan files:
a plan whose header columns are bad, or a top-level goal together with its milestones when
any row of it is bad.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.goals._lifecycle import check_plan
from alliance_fhir.goals._model import Goal, Plan, PlanHeader
from alliance_fhir.inputs import load_document, problems_from_validation, read_text
from alliance_fhir.resources import bundled_mappings

PathKey = tuple[int | str, ...]


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(pattern=r"^(plan\.|goal\.|parent$)")
    required: bool = False
    list: bool = False
    item_field: str | None = None
    default_system: str | None = None
    doc: str = ""


class FieldMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: str = Field(pattern=r"^alliance-fhir/goals-csv$")
    version: int = Field(ge=1, le=1)
    list_separator: str = Field(min_length=1, max_length=1)
    columns: dict[str, ColumnSpec]

    def paths(self, scope: str) -> dict[PathKey, str]:
        """Path inside a plan header or a goal -> the column that fills it."""
        out: dict[PathKey, str] = {}
        for name, spec in self.columns.items():
            head, _, rest = spec.field.partition(".")
            if head == scope and rest:
                out[_split(rest)] = name
        return out


def default_field_map() -> Path:
    return bundled_mappings() / "sources" / "goals-csv.yaml"


def load_field_map(path: Path | None = None) -> FieldMap:
    """Read and check a CSV field map (the shipped one by default)."""
    path = path or default_field_map()
    data, pos = load_document(path)
    try:
        return FieldMap.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(problems_from_validation(exc, pos)) from exc


def _split(dotted: str) -> PathKey:
    return tuple(int(p) if p.isdigit() else p for p in dotted.split("."))


def _put(target: dict[str, Any], path: PathKey, value: Any) -> None:
    node: Any = target
    for here, nxt in itertools.pairwise(path):
        empty: Any = [] if isinstance(nxt, int) else {}
        if isinstance(here, int):
            while len(node) <= here:
                node.append(None)
            if node[here] is None:
                node[here] = empty
            node = node[here]
        else:
            node = node.setdefault(here, empty)
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
        node[last] = value
    else:
        node[last] = value


@dataclass
class _Row:
    line: int
    key: str
    parent: str | None
    goal: Goal | None
    problems: list[Problem] = field(default_factory=list)


@dataclass
class _PlanRows:
    first_line: int
    header: dict[str, Any]
    header_cells: dict[str, str]
    rows: list[_Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def load_plans_csv(
    path: Path, field_map: Path | FieldMap | None = None
) -> tuple[list[Plan], list[Problem]]:
    """Plans in a CSV file, and the problems (file:line [column]) that kept rows out."""
    fmap = field_map if isinstance(field_map, FieldMap) else load_field_map(field_map)
    source = str(path)
    try:
        text = read_text(path)
    except InvalidInputError as exc:
        return [], exc.problems
    return plans_from_csv_text(text, source, fmap)


def plans_from_csv_text(text: str, source: str, fmap: FieldMap) -> tuple[list[Plan], list[Problem]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = reader.fieldnames or []
    problems = [
        Problem(source, str(name), "column not in the field map", line=1)
        for name in columns
        if name not in fmap.columns
    ]
    problems += [
        Problem(source, name, "required column is missing", line=1)
        for name, spec in fmap.columns.items()
        if spec.required and name not in columns
    ]
    if problems or not columns:
        return [], problems or [Problem(source, "", "the file is empty", line=1)]

    goal_cols = fmap.paths("goal")
    plans: dict[str, _PlanRows] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            problems.append(Problem(source, "", "row has more cells than the header", line=line))
            continue
        cells = {k: (v or "").strip() for k, v in row.items() if k is not None}
        missing = [c for c in columns if fmap.columns[c].required and not cells.get(c)]
        if missing:
            problems += [Problem(source, c, "must not be blank", line=line) for c in missing]
            continue
        plan_part: dict[str, Any] = {}
        goal_part: dict[str, Any] = {}
        header_cells: dict[str, str] = {}
        parent: str | None = None
        for name, value in cells.items():
            if not value:
                continue
            spec = fmap.columns[name]
            val: Any = value
            if spec.list:
                items = [v.strip() for v in value.split(fmap.list_separator) if v.strip()]
                items = [_with_system(v, spec.default_system) for v in items]
                val = [{spec.item_field: v} for v in items] if spec.item_field else items
            else:
                val = _with_system(value, spec.default_system)
            if spec.field == "parent":
                parent = value
                continue
            scope, _, rest = spec.field.partition(".")
            _put(plan_part if scope == "plan" else goal_part, _split(rest), val)
            if scope == "plan":
                header_cells[name] = value
        key = plan_part.get("key", "")
        group = plans.get(key)
        if group is None:
            group = plans[key] = _PlanRows(line, plan_part, header_cells)
        else:
            # later rows may leave the plan's columns blank; what they fill in must match
            clash = [c for c, v in header_cells.items() if group.header_cells.get(c, v) != v]
            if clash:
                problems += [
                    Problem(
                        source,
                        c,
                        f"differs from the plan's first row (line {group.first_line})",
                        line=line,
                    )
                    for c in clash
                ]
                continue
        goal_key = str(goal_part.get("key", ""))
        try:
            goal: Goal | None = Goal.model_validate(goal_part)
            found: list[Problem] = []
        except ValidationError as exc:
            goal = None
            found = [
                Problem(
                    source,
                    _column(err["loc"], goal_cols, frozenset(c for c, v in cells.items() if v)),
                    _reason(err["msg"]),
                    line=line,
                )
                for err in exc.errors(include_url=False)
            ]
        group.rows.append(_Row(line, goal_key, parent or None, goal, found))

    out: list[Plan] = []
    plan_cols = fmap.paths("plan")
    for group in plans.values():
        try:
            header = PlanHeader.model_validate(group.header)
        except ValidationError as exc:
            problems += [
                Problem(
                    source,
                    _column(err["loc"], plan_cols),
                    _reason(err["msg"]),
                    line=group.first_line,
                )
                for err in exc.errors(include_url=False)
            ]
            continue
        plan, found = _assemble(header, group.rows, source, goal_cols)
        problems += found
        out.append(plan)
    return out, problems


def _assemble(
    header: PlanHeader, rows: list[_Row], source: str, goal_cols: dict[PathKey, str]
) -> tuple[Plan, list[Problem]]:
    problems: list[Problem] = []
    by_key: dict[str, _Row] = {}
    for row in rows:
        if row.key in by_key:
            row.problems.append(
                Problem(
                    source,
                    "goal",
                    f"goal key {row.key} is repeated in plan {header.key}",
                    line=row.line,
                )
            )
            continue
        by_key[row.key] = row

    def root_of(row: _Row) -> _Row | None:
        seen = {row.key}
        while row.parent is not None:
            parent = by_key.get(row.parent)
            if parent is None or parent.key in seen:
                return None
            seen.add(parent.key)
            row = parent
        return row

    roots: dict[str, list[_Row]] = {}
    for row in rows:
        if by_key.get(row.key) is not row:
            problems += row.problems
            continue
        root = root_of(row)
        if root is None:
            reason = (
                f"parent {row.parent} is not a goal of plan {header.key}"
                if row.parent not in by_key
                else f"parent {row.parent} leads round in a circle"
            )
            problems += [*row.problems, Problem(source, "parent", reason, line=row.line)]
            continue
        roots.setdefault(root.key, []).append(row)

    def build(row: _Row) -> Goal:
        assert row.goal is not None
        kids = [build(r) for r in rows if r.parent == row.key and by_key.get(r.key) is r]
        return row.goal.model_copy(update={"milestones": kids})

    tops: list[tuple[_Row, Goal]] = []
    for key, members in roots.items():
        bad = [p for r in members for p in r.problems]
        if bad:
            problems += bad
            root_row = by_key[key]
            problems.append(_left_out(source, root_row))
            continue
        tops.append((by_key[key], build(by_key[key])))

    plan = Plan.model_validate({**header.model_dump(), "goals": [g for _, g in tops]})
    lines = {g.key: by_key[g.key].line for g in plan.all_goals()}
    dropped: set[int] = set()
    for rule in check_plan(plan, for_file=True):
        goal, rest = _goal_at(plan, rule.path)
        line = lines.get(goal.key) if goal else None
        column = _column(rest, goal_cols) if rest else rule.field
        problems.append(Problem(source, column or rule.field, rule.reason, line=line))
        if rule.top_goal is not None:
            dropped.add(rule.top_goal)
    for i in sorted(dropped):
        problems.append(_left_out(source, by_key[plan.goals[i].key]))
    kept = [g for i, g in enumerate(plan.goals) if i not in dropped]
    return plan.model_copy(update={"goals": kept}), problems


def _left_out(source: str, row: _Row) -> Problem:
    return Problem(
        source,
        "goal",
        f"goal {row.key} and its milestones were left out because of the problems reported",
        line=row.line,
    )


def _goal_at(plan: Plan, path: PathKey) -> tuple[Goal | None, PathKey]:
    """The goal a rule path points into, and the rest of the path inside that goal."""
    goal: Goal | None = None
    rest = path
    if len(rest) >= 2 and rest[0] == "goals" and isinstance(rest[1], int):
        goal = plan.goals[rest[1]]
        rest = rest[2:]
        while len(rest) >= 2 and rest[0] == "milestones" and isinstance(rest[1], int):
            goal = goal.milestones[rest[1]]
            rest = rest[2:]
    return goal, rest


def _column(
    loc: tuple[int | str, ...], cols: dict[PathKey, str], filled: frozenset[str] = frozenset()
) -> str:
    """The column behind a path: exact, else the nearest ancestor, else a child column
    (one the row filled in, when there is one: a complaint about a whole target points at
    the target cells that were given)."""
    key = tuple(loc)
    while key:
        if key in cols:
            return cols[key]
        key = key[:-1]
    children = [name for path, name in cols.items() if path[: len(loc)] == tuple(loc)]
    given = [name for name in children if name in filled]
    if given or children:
        return (given or children)[0]
    return str(loc[-1]) if loc else ""


def _reason(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def _with_system(value: str, system: str | None) -> str:
    if system and "|" not in value and "/" not in value:
        return f"{system}|{value}"
    return value
