"""A plan as plain text, the way a clinician reads it in a session."""

from __future__ import annotations

from alliance_fhir.goals._gas import gas_summaries
from alliance_fhir.goals._model import Acceptance, Goal, Plan, Target, split_identifier

_WIDTH = 2  # spaces per indent level


def _who(key: str) -> str:
    ident = split_identifier(key)
    return ident[1] if ident else key


def _number(value: object) -> str:
    text = str(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


_COMPARATOR_WORDS = {"<": "below", "<=": "at most", ">=": "at least", ">": "above"}


def target_text(target: Target) -> str:
    """A target as one line: measure, level (with an EHR's comparator), due date or the
    duration it is due after (e.g. ``Days sober: at least 30 d within 12 wk``)."""
    return _target(target)


def _target(target: Target) -> str:
    unit = f" {target.unit}" if target.unit else ""
    if target.value is not None:
        level = f"{_number(target.value)}{unit}"
        if target.comparator:
            level = f"{_COMPARATOR_WORDS[target.comparator]} {level}"
    elif target.low is not None and target.high is not None:
        level = f"{_number(target.low)} to {_number(target.high)}{unit}"
    elif target.low is not None:
        level = f"at least {_number(target.low)}{unit}"
    elif target.high is not None:
        level = f"at most {_number(target.high)}{unit}"
    else:
        level = target.detail or ""
    text = f"{target.measure.text}: {level}" if target.measure else level
    if target.due is not None:
        text += f" by {target.due.isoformat()}"
    elif target.due_after:
        text += f" within {target.due_after}"
    return text.strip(": ")


def _stance(party: str, stance: Acceptance) -> str:
    verb = {"agree": "agrees", "disagree": "disagrees", "pending": "not decided yet"}
    text = f"{party} {verb[stance.status]}"
    if stance.priority is not None:
        text += f" (priority {stance.priority})"
    return text


def _due(goal: Goal) -> str | None:
    dues = sorted(t.due for t in goal.targets if t.due is not None)
    return dues[0].isoformat() if dues else None


def _status(goal: Goal) -> str:
    status = str(goal.lifecycle_status)
    if goal.achievement_status is not None:
        status += f", {goal.achievement_status}"
    return status


def _signed(score: int) -> str:
    return f"{score:+d}" if score else "0"


def _gas(goal: Goal) -> str | None:
    if not goal.gas:
        return None
    latest = sorted(goal.gas, key=lambda r: r.on)
    last = latest[-1]
    text = f"GAS {_signed(last.score)} on {last.on.isoformat()}"
    if len(latest) > 1:
        prev = latest[-2]
        text += f" (before: {_signed(prev.score)} on {prev.on.isoformat()})"
    return text


def _last_note(goal: Goal) -> str | None:
    dated = [n for n in goal.notes if n.on is not None]
    note = max(dated, key=lambda n: n.on.isoformat() if n.on else "") if dated else None
    note = note or (goal.notes[-1] if goal.notes else None)
    if note is None:
        return None
    when = f" ({note.on.isoformat()})" if note.on is not None else ""
    return f"Last progress note{when}: {note.text}"


def _milestone(goal: Goal, pad: str, lines: list[str]) -> None:
    due = _due(goal)
    head = f"{pad}- [{_status(goal)}] \u201c{goal.client_words}\u201d"
    if due:
        head += f" (due {due})"
    lines.append(head)
    inner = pad + " " * _WIDTH
    for target in goal.targets:
        lines.append(f"{inner}Target: {_target(target)}")
    for extra in (_gas(goal), _last_note(goal)):
        if extra:
            lines.append(f"{inner}{extra}")
    for child in goal.milestones:
        _milestone(child, inner, lines)


def render_plans_text(plans: list[Plan]) -> str:
    """Several plans, one after the other; a Goal that an earlier plan already showed (the
    EHR may link one Goal from several CarePlans) is named, not shown again."""
    shown: dict[str, str] = {}
    return "\n".join(render_plan_text(plan, shown) for plan in plans)


def _goal_id(goal: Goal) -> str:
    return f"Goal/{goal.source_id}" if goal.source_id else goal.key


def render_plan_text(plan: Plan, shown: dict[str, str] | None = None) -> str:
    """Goals in the client's words, each party's agreement, milestones with status and due
    date, targets, strengths and resources, the last progress note, and the GAS summary.

    ``shown`` (goal id -> plan key) is filled as goals are rendered; a goal already in it is
    written as one line pointing at the plan that shows it."""
    seen = shown if shown is not None else {}
    title = f"Goal plan {plan.key}" + (f": {plan.title}" if plan.title else "")
    lines = [title, f"Status: {plan.status}"]
    lines.append(f"Client: {_who(plan.patient)}")
    others = [_who(c) for c in plan.clinicians[1:]]
    lines.append(
        f"Clinician: {_who(plan.lead)} (lead)" + (f"; also {', '.join(others)}" if others else "")
    )
    if plan.start or plan.end:
        start = plan.start.isoformat() if plan.start else "?"
        end = plan.end.isoformat() if plan.end else "open"
        lines.append(f"Period: {start} to {end}")
    if plan.description:
        lines.append(plan.description)
    for number, goal in enumerate(plan.goals, start=1):
        lines.append("")
        earlier = seen.get(_goal_id(goal))
        if earlier is not None:
            lines.append(
                f"{number}. \u201c{goal.client_words}\u201d (shown under goal plan {earlier})"
            )
            continue
        seen[_goal_id(goal)] = plan.key
        lines.append(f"{number}. \u201c{goal.client_words}\u201d")
        pad = " " * (len(str(number)) + 2)
        facts = [f"Status: {_status(goal)}"]
        if goal.status_date:
            facts[0] += f" since {goal.status_date.isoformat()}"
        if goal.priority:
            facts.append(f"agreed priority {goal.priority}")
        if goal.proposed_by:
            facts.append(f"proposed by {goal.proposed_by}")
        lines.append(pad + "; ".join(facts))
        if goal.clinician_framing:
            lines.append(f"{pad}Clinician's framing: {goal.clinician_framing}")
        if goal.agreement:
            parts = []
            if goal.agreement.client:
                parts.append(_stance("client", goal.agreement.client))
            if goal.agreement.clinician:
                who = _who(goal.agreement.clinician.clinician or plan.lead)
                parts.append(_stance(f"clinician {who}", goal.agreement.clinician))
            lines.append(f"{pad}Agreement: " + "; ".join(parts))
        if goal.strengths:
            lines.append(f"{pad}Strengths: " + "; ".join(goal.strengths))
        if goal.resources:
            lines.append(f"{pad}Resources: " + "; ".join(goal.resources))
        if goal.addresses:
            lines.append(
                f"{pad}Addresses: " + "; ".join(a.text or a.reference or "" for a in goal.addresses)
            )
        for target in goal.targets:
            lines.append(f"{pad}Target: {_target(target)}")
        if goal.milestones:
            lines.append(f"{pad}Milestones:")
            for child in goal.milestones:
                _milestone(child, pad + " " * _WIDTH, lines)
        for extra in (_last_note(goal), _gas(goal)):
            if extra:
                lines.append(pad + extra)
    summaries = gas_summaries(plan)
    if summaries:
        lines.append("")
        lines.append("GAS summary (T-score; 50 = goals met as expected):")
        for summary in reversed(summaries):
            count = len(summary.ratings)
            lines.append(
                f"  {summary.on.isoformat()}: T = {summary.t_score:.1f} "
                f"({count} goal{'s' if count != 1 else ''} rated)"
            )
    if not plan.goals:
        lines.append("")
        lines.append("No goals yet.")
    return "\n".join(lines) + "\n"
