"""Goal lifecycle: which status changes are allowed, and which combinations contradict.

Transitions (anything may also go to ``entered-in-error``; staying put is a no-op)::

    proposed  -> planned, accepted, active, rejected, cancelled
    planned   -> accepted, active, on-hold, cancelled
    accepted  -> planned, active, on-hold, cancelled
    active    -> on-hold, completed, cancelled
    on-hold   -> active, cancelled
    completed, cancelled, rejected, entered-in-error: final

Consistency rules (checked for plan files and after every ``transition``):

1. A goal not started yet (proposed, planned, accepted) or rejected has no achievement status.
2. A completed goal says how it ended: achieved, not-achieved or not-attainable.
3. A goal the client disagrees with is not accepted, active, on hold or completed: the client
   takes part in every decision about their goals.
4. A closed goal (completed, cancelled, rejected) has no open milestones.
5. A milestone is not under way (active, on hold, completed) while its goal is not started.
6. Dates: status date and target due dates are not before the goal's start.
7. The clinician named in an agreement is one of the plan's clinicians.
8. GAS ratings: at most one per goal per day.
9. A completed or revoked plan has only closed goals.
10. Goal keys are unique within a plan (milestones included).
11. Plan files must say who proposed each goal and date each progress note (a Goal read from
    the EHR may lack both; see ``check_plan(..., for_file=False)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.goals._model import (
    CLOSED,
    FINAL_ACHIEVEMENT,
    NOT_STARTED,
    Achievement,
    Goal,
    Lifecycle,
    Plan,
    PlanStatus,
    Stance,
)
from alliance_fhir.inputs import format_path

L = Lifecycle

TRANSITIONS: dict[Lifecycle, frozenset[Lifecycle]] = {
    L.PROPOSED: frozenset({L.PLANNED, L.ACCEPTED, L.ACTIVE, L.REJECTED, L.CANCELLED}),
    L.PLANNED: frozenset({L.ACCEPTED, L.ACTIVE, L.ON_HOLD, L.CANCELLED}),
    L.ACCEPTED: frozenset({L.PLANNED, L.ACTIVE, L.ON_HOLD, L.CANCELLED}),
    L.ACTIVE: frozenset({L.ON_HOLD, L.COMPLETED, L.CANCELLED}),
    L.ON_HOLD: frozenset({L.ACTIVE, L.CANCELLED}),
    L.COMPLETED: frozenset(),
    L.CANCELLED: frozenset(),
    L.REJECTED: frozenset(),
    L.ENTERED_IN_ERROR: frozenset(),
}

_UNDER_WAY = frozenset({L.ACTIVE, L.ON_HOLD, L.COMPLETED})
_COMMITTED = frozenset({L.ACCEPTED, L.ACTIVE, L.ON_HOLD, L.COMPLETED})

Path = tuple[int | str, ...]


@dataclass(frozen=True)
class RuleProblem:
    """A broken rule, located by its path inside the plan (``goals[0].milestones[1]...``)."""

    path: Path
    field: str
    reason: str

    @property
    def top_goal(self) -> int | None:
        """Index of the top-level goal the problem lies in, if any."""
        if len(self.path) >= 2 and self.path[0] == "goals" and isinstance(self.path[1], int):
            return self.path[1]
        return None


def allowed_transitions(status: Lifecycle) -> frozenset[Lifecycle]:
    """Where a goal in ``status`` may go next (``entered-in-error`` is always allowed)."""
    if status is L.ENTERED_IN_ERROR:
        return frozenset()
    return TRANSITIONS[status] | {L.ENTERED_IN_ERROR}


def transition(
    goal: Goal,
    new_status: Lifecycle | str,
    *,
    on: date | None = None,
    achievement: Achievement | str | None = None,
) -> Goal:
    """A copy of ``goal`` moved to ``new_status`` (status date ``on``, if given).

    ``achievement`` sets the achievement status at the same time (needed to complete a goal).
    Raises InvalidInputError for a transition the lifecycle does not allow, or when the result
    would contradict itself (rules 1-5 above, checked on the goal and its milestones).
    """
    target = Lifecycle(new_status)
    where = f"goal {goal.key}"
    if target is not goal.lifecycle_status and target not in allowed_transitions(
        goal.lifecycle_status
    ):
        allowed = ", ".join(sorted(allowed_transitions(goal.lifecycle_status))) or "none"
        raise InvalidInputError(
            Problem(
                where,
                "lifecycle_status",
                f"cannot go from {goal.lifecycle_status} to {target} (allowed: {allowed})",
            )
        )
    update: dict[str, object] = {"lifecycle_status": target}
    if achievement is not None:
        update["achievement_status"] = Achievement(achievement)
    if on is not None:
        update["status_date"] = on
    moved = goal.model_copy(update=update)
    problems = check_goal(moved, ())
    if problems:
        raise InvalidInputError(
            [Problem(where, p.field, p.reason, path=_format(p.path) or None) for p in problems]
        )
    return moved


def check_goal(goal: Goal, path: Path, parent: Goal | None = None) -> list[RuleProblem]:
    """Rules 1-6 and 8 for ``goal`` and (recursively) its milestones."""
    out: list[RuleProblem] = []
    status, achieved = goal.lifecycle_status, goal.achievement_status

    def bad(fld: str, reason: str) -> None:
        out.append(RuleProblem((*path, fld), fld, reason))

    if achieved is not None and (status in NOT_STARTED or status is L.REJECTED):
        bad("achievement_status", f"a {status} goal has no achievement status yet ({achieved})")
    if status is L.COMPLETED and achieved not in FINAL_ACHIEVEMENT:
        finals = ", ".join(sorted(FINAL_ACHIEVEMENT))
        bad(
            "achievement_status",
            f"a completed goal needs an achievement status of {finals} (got {achieved or 'none'})",
        )
    client = goal.agreement.client if goal.agreement else None
    if client is not None and client.status is Stance.DISAGREE and status in _COMMITTED:
        bad("lifecycle_status", f"the client disagrees with this goal, so it cannot be {status}")
    if parent is not None:
        if parent.lifecycle_status in CLOSED and status not in CLOSED:
            bad(
                "lifecycle_status",
                f"milestone is {status} but its goal {parent.key} is {parent.lifecycle_status}",
            )
        if parent.lifecycle_status in NOT_STARTED and status in _UNDER_WAY:
            bad(
                "lifecycle_status",
                f"milestone is {status} but its goal {parent.key} is only "
                f"{parent.lifecycle_status}",
            )
    if goal.start is not None:
        if goal.status_date is not None and goal.status_date < goal.start:
            bad("status_date", f"status date {goal.status_date} is before the start {goal.start}")
        for i, target in enumerate(goal.targets):
            if target.due is not None and target.due < goal.start:
                out.append(
                    RuleProblem(
                        (*path, "targets", i, "due"),
                        "due",
                        f"due date {target.due} is before the goal's start {goal.start}",
                    )
                )
    seen: set[date] = set()
    for i, rating in enumerate(goal.gas):
        if rating.on in seen:
            out.append(
                RuleProblem((*path, "gas", i, "on"), "on", f"a second GAS rating on {rating.on}")
            )
        seen.add(rating.on)
    for i, milestone in enumerate(goal.milestones):
        out.extend(check_goal(milestone, (*path, "milestones", i), goal))
    return out


def check_plan(plan: Plan, *, for_file: bool = True) -> list[RuleProblem]:
    """Every consistency rule for a whole plan; ``for_file`` adds rule 11."""
    out: list[RuleProblem] = []
    seen: set[str] = set()
    for i, top in enumerate(plan.goals):
        base: Path = ("goals", i)
        out.extend(check_goal(top, base))
        if plan.status in (PlanStatus.COMPLETED, PlanStatus.REVOKED) and (
            top.lifecycle_status not in CLOSED
        ):
            out.append(
                RuleProblem(
                    (*base, "lifecycle_status"),
                    "lifecycle_status",
                    f"the plan is {plan.status} but this goal is {top.lifecycle_status}",
                )
            )
        for path, goal in _walk_paths(top, base):
            if goal.key in seen:
                out.append(RuleProblem((*path, "key"), "key", f"goal key {goal.key} is repeated"))
            seen.add(goal.key)
            stance = goal.agreement.clinician if goal.agreement else None
            if stance is not None and stance.clinician not in (None, *plan.clinicians):
                out.append(
                    RuleProblem(
                        (*path, "agreement", "clinician", "clinician"),
                        "clinician",
                        f"{stance.clinician} is not one of the plan's clinicians",
                    )
                )
            if for_file:
                if goal.proposed_by is None:
                    out.append(
                        RuleProblem(
                            (*path, "proposed_by"),
                            "proposed_by",
                            "say who proposed the goal: client, clinician or both",
                        )
                    )
                for j, note in enumerate(goal.notes):
                    if note.on is None:
                        out.append(
                            RuleProblem(
                                (*path, "notes", j, "on"), "on", "a progress note needs a date"
                            )
                        )
    return out


def validate_plan(plan: Plan, *, source: str = "<plan>", for_file: bool = False) -> Plan:
    """Raise InvalidInputError listing every broken rule; return ``plan`` when it has none."""
    problems = check_plan(plan, for_file=for_file)
    if problems:
        raise InvalidInputError(
            [Problem(source, p.field, p.reason, path=_format(p.path)) for p in problems]
        )
    return plan


def _walk_paths(goal: Goal, path: Path) -> list[tuple[Path, Goal]]:
    out = [(path, goal)]
    for i, milestone in enumerate(goal.milestones):
        out.extend(_walk_paths(milestone, (*path, "milestones", i)))
    return out


def _format(path: Sequence[int | str]) -> str:
    return format_path(path)
