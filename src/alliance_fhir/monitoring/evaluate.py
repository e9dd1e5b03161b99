"""Evaluating rules on one patient's check-ins for one instrument: pure and deterministic.

Every rule looks at the *current* state of the series, so a rule that fired last week and no
longer fires means the scores recovered (``alerts.decide_alerts`` closes the alert):

``below-cutoff``
    the latest score is below the cutoff (``at-or-below`` when the cutoff says so).
``drop``
    the latest score is at least ``amount`` (default: the instrument's reliable change) below
    the previous score, or below the baseline (mean of the first ``baseline_sessions`` scores).
``declining-trend``
    the last ``sessions`` scores fell at every step (``strict``; otherwise never rose) and the
    first of them minus the latest is at least ``min_decline`` (default: reliable change).
``item-floor``
    the latest answer to an item is at the lowest *keyed* value of its scale, so a
    reverse-keyed item fires when answered at its top.
``missed-checkin``
    the care plan is active and the last check-in (scorable or not: the client did check in)
    is at least ``days`` whole days before ``as_of``; with no check-in at all, counted from
    ``care_plan_start`` when given (otherwise nothing fires).

"Scores" are those of scorable check-ins only: an unscorable check-in (too many unanswered
items) is skipped by every score rule, with a log line naming its assessment key and reason
(never answers or patient details), so it can neither raise nor clear an alert. A check-in
whose total is computable but whose subscale is not is skipped only by rules on that subscale.

Comparisons are exact (floats are read as the decimals they print as), so ``36 - 31 >= 5``
holds however the binary arithmetic would round.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from alliance_fhir.exceptions import ConfigError, InvalidInputError, Problem
from alliance_fhir.instruments.schema import Instrument, ScoreDef
from alliance_fhir.instruments.scoring import AnswerValue, keyed_value, round_half_up, score
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.rules import (
    BelowCutoffParams,
    DecliningTrendParams,
    DropParams,
    ItemFloorParams,
    MissedCheckinParams,
    Rule,
    Severity,
    check_rule,
    resolve_score,
)

__all__ = [
    "CheckIn",
    "Trigger",
    "alert_key",
    "checkin_from_answers",
    "evaluate",
    "flagged_points",
    "recovery_note",
]

#: Decimal places of the numbers put into messages and ``Trigger.values``.
VALUE_DECIMALS = 2


@dataclass(frozen=True)
class CheckIn:
    """One completed instrument, reduced to what the rules read.

    ``key`` is the assessment key (our QuestionnaireResponse identifier value). ``authored``
    must carry a timezone. ``keyed_items`` maps linkId to the keyed (reverse-applied) value.
    ``scorable`` is False when the total could not be computed; ``reason`` then says why.
    """

    key: str
    authored: datetime
    total: float | None
    subscales: Mapping[str, float | None] = field(default_factory=dict)
    keyed_items: Mapping[str, float] = field(default_factory=dict)
    scorable: bool = True
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.authored.tzinfo is None or self.authored.utcoffset() is None:
            raise InvalidInputError(Problem(f"check-in {self.key}", "authored", "needs a timezone"))
        if self.scorable and self.total is None:
            raise InvalidInputError(
                Problem(f"check-in {self.key}", "total", "a scorable check-in needs a total")
            )


@dataclass(frozen=True)
class Trigger:
    """A rule that fires for a patient now.

    ``focus_key`` is the assessment key of the check-in that made it fire (None for a missed
    check-in). ``values`` are the message's fields (numbers rounded to 2 places; dates ISO).
    """

    rule_id: str
    patient_key: str
    instrument: str
    severity: Severity
    message: str
    focus_key: str | None
    values: Mapping[str, Any]
    label: str = ""

    @property
    def key(self) -> str:
        """The alert's key (one Flag and one Task per rule and patient)."""
        return alert_key(self.rule_id, self.patient_key)


def alert_key(rule_id: str, patient_key: str) -> str:
    """``{rule_id}:{patient_key}``: the identifier value of an alert's Flag and Task."""
    return f"{rule_id}:{patient_key}"


# -- building check-ins ------------------------------------------------------------------


def checkin_from_answers(
    instrument: Instrument, key: str, authored: datetime, answers: Mapping[str, AnswerValue]
) -> CheckIn:
    """Score ``answers`` and keep what the rules read.

    Answers the scorer refuses make an unscorable check-in (the reason names linkIds and the
    rule broken, never free text); they do not raise.
    """
    try:
        scores = score(instrument, answers)
    except InvalidInputError as exc:
        reasons = "; ".join(f"{p.field}: {p.reason}" for p in exc.problems[:3])
        return CheckIn(key, authored, None, scorable=False, reason=f"invalid answers ({reasons})")
    keyed: dict[str, float] = {}
    for link_id in sorted(answers):
        item = instrument.item(link_id)
        answer = answers[link_id]
        if item.type != "text" and answer is not None:
            keyed[link_id] = keyed_value(instrument, item, answer)
    total = scores.total
    return CheckIn(
        key=key,
        authored=authored,
        total=total.value,
        subscales={s.id: s.value for s in scores.subscales},
        keyed_items=keyed,
        scorable=total.value is not None,
        reason=total.reason if total.value is None else None,
    )


# -- evaluation --------------------------------------------------------------------------


def _exact(value: float | int) -> Fraction:
    return Fraction(Decimal(repr(value))) if isinstance(value, float) else Fraction(value)


def _num(value: Fraction | float | int) -> int | float:
    """A number for messages: rounded half-up to 2 places, an int when whole."""
    rounded = round_half_up(value if not isinstance(value, int) else Fraction(value), 2)
    return int(rounded) if rounded.is_integer() else rounded


def _date(when: datetime) -> str:
    return when.date().isoformat()


def _ordered(series: Iterable[CheckIn]) -> list[CheckIn]:
    return sorted(series, key=lambda c: (c.authored, c.key))


def _score_of(checkin: CheckIn, sdef: ScoreDef, instrument: Instrument) -> float | None:
    if sdef.id == instrument.scoring.total.id:
        return checkin.total
    return checkin.subscales.get(sdef.id)


def _scored(
    series: Sequence[CheckIn], sdef: ScoreDef, instrument: Instrument
) -> list[tuple[CheckIn, Fraction]]:
    out: list[tuple[CheckIn, Fraction]] = []
    for c in series:
        if not c.scorable:
            continue
        value = _score_of(c, sdef, instrument)
        if value is not None:
            out.append((c, _exact(value)))
    return out


def _required(value: float | None, rule: Rule) -> float:
    if value is None:  # check_rule refuses such a rule before evaluation
        raise ConfigError(f"rule {rule.id}: no amount and no reliable change to fall back on")
    return value


@dataclass(frozen=True)
class _Fired:
    focus: CheckIn | None
    values: dict[str, Any]


def _fire(
    rule: Rule,
    instrument: Instrument,
    series: Sequence[CheckIn],
    *,
    care_plan_active: bool,
    as_of: datetime | None,
    care_plan_start: datetime | None,
) -> _Fired | None:
    """Whether ``rule`` fires on ``series`` (ordered, all check-ins up to now)."""
    p = rule.params
    base: dict[str, Any] = {"instrument": instrument.id}
    if isinstance(p, MissedCheckinParams):
        if not care_plan_active or as_of is None:
            return None
        last = series[-1].authored if series else care_plan_start
        if last is None:
            return None
        days_since = (as_of - last).days
        if days_since < p.days:
            return None
        last_text = _date(series[-1].authored) if series else "none yet"
        return _Fired(
            None, {**base, "days_since": days_since, "days": p.days, "last_checkin": last_text}
        )

    if isinstance(p, ItemFloorParams):
        scorable = [c for c in series if c.scorable]
        if not scorable:
            return None
        latest = scorable[-1]
        answered = latest.keyed_items.get(p.link_id)
        item = instrument.item(p.link_id)
        floor, _ = instrument.item_range(item)
        if answered is None or _exact(answered) != _exact(floor):
            return None
        values = {
            **base,
            "item": item.label,
            "value": _num(_exact(answered)),
            "floor": _num(_exact(floor)),
            "date": _date(latest.authored),
        }
        return _Fired(latest, values)

    sdef = resolve_score(instrument, p.score)
    points = _scored(series, sdef, instrument)
    if not points:
        return None
    latest, now = points[-1]
    base |= {"score_name": sdef.label, "score": _num(now), "date": _date(latest.authored)}

    if isinstance(p, BelowCutoffParams):
        cutoff_def = instrument.scoring.cutoff
        cutoff = _exact(p.cutoff) if p.cutoff is not None else None
        how = p.rule
        if cutoff_def is not None:
            cutoff = cutoff if cutoff is not None else _exact(cutoff_def.value)
            how = how or cutoff_def.rule
        assert cutoff is not None  # check_rule guarantees a cutoff
        below = now <= cutoff if how == "at-or-below" else now < cutoff
        return _Fired(latest, {**base, "cutoff": _num(cutoff)}) if below else None

    rc = instrument.scoring.reliable_change
    if isinstance(p, DropParams):
        amount = _exact(_required(p.amount if p.amount is not None else rc, rule))
        if p.reference == "previous":
            if len(points) < 2:
                return None
            reference = points[-2][1]
            compared_with = f"the previous check-in ({_date(points[-2][0].authored)})"
        else:
            n = p.baseline_sessions
            if len(points) < n + 1:
                return None
            reference = sum((v for _, v in points[:n]), Fraction(0)) / n
            compared_with = (
                "the first check-in" if n == 1 else f"the mean of the first {n} check-ins"
            )
        drop = reference - now
        if drop < amount:
            return None
        values = {
            **base,
            "reference": _num(reference),
            "compared_with": compared_with,
            "drop": _num(drop),
            "amount": _num(amount),
        }
        return _Fired(latest, values)

    assert isinstance(p, DecliningTrendParams)
    least = _exact(_required(p.min_decline if p.min_decline is not None else rc, rule))
    if len(points) < p.sessions:
        return None
    window = [v for _, v in points[-p.sessions :]]
    steps = list(itertools.pairwise(window))
    falling = all(b < a for a, b in steps) if p.strict else all(b <= a for a, b in steps)
    decline = window[0] - window[-1]
    if not falling or decline < least:
        return None
    values = {
        **base,
        "first": _num(window[0]),
        "decline": _num(decline),
        "min_decline": _num(least),
        "sessions": p.sessions,
    }
    return _Fired(latest, values)


def _usable(rules: Iterable[Rule], instrument: Instrument) -> list[Rule]:
    out = []
    for rule in sorted(rules, key=lambda r: r.id):
        if rule.instrument != instrument.id:
            continue
        problems = check_rule(rule, instrument)
        if problems:
            reasons = "; ".join(r for _, r in problems)
            raise ConfigError(f"rule {rule.id} does not fit {instrument.id}: {reasons}")
        out.append(rule)
    return out


def _log_skipped(series: Sequence[CheckIn], instrument: Instrument) -> None:
    log = get_logger(__name__)
    for c in series:
        if not c.scorable:
            log.info(
                "monitoring.checkin_skipped",
                assessment=c.key,
                instrument=instrument.id,
                reason=c.reason or "not scorable",
            )


def evaluate(
    rules: Iterable[Rule],
    instrument: Instrument,
    series: Iterable[CheckIn],
    *,
    patient_key: str,
    care_plan_active: bool,
    as_of: datetime,
    care_plan_start: datetime | None = None,
) -> list[Trigger]:
    """The rules for ``instrument`` that fire on one patient's ``series`` at ``as_of``.

    ``patient_key`` is opaque (it only goes into the Trigger and alert keys). Rules for other
    instruments are ignored; a rule that does not fit the instrument is a ``ConfigError``.
    Triggers come back sorted by rule id; the same input gives the same output.
    """
    if as_of.tzinfo is None:
        raise InvalidInputError(Problem("evaluation", "as_of", "needs a timezone"))
    ordered = _ordered(series)
    usable = _usable(rules, instrument)
    if usable:
        _log_skipped(ordered, instrument)
    out: list[Trigger] = []
    for rule in usable:
        fired = _fire(
            rule,
            instrument,
            ordered,
            care_plan_active=care_plan_active,
            as_of=as_of,
            care_plan_start=care_plan_start,
        )
        if fired is None:
            continue
        out.append(
            Trigger(
                rule_id=rule.id,
                patient_key=patient_key,
                instrument=instrument.id,
                severity=rule.severity,
                message=rule.render(fired.values),
                focus_key=fired.focus.key if fired.focus else None,
                values=fired.values,
                label=rule.label,
            )
        )
    return out


def flagged_points(
    rules: Iterable[Rule], instrument: Instrument, series: Iterable[CheckIn]
) -> dict[str, tuple[str, ...]]:
    """For the report: assessment key -> ids of the score rules that fired when that
    check-in was the latest. Unscorable check-ins and missed-check-in rules never appear."""
    ordered = _ordered(series)
    usable = [r for r in _usable(rules, instrument) if r.kind != "missed-checkin"]
    out: dict[str, tuple[str, ...]] = {}
    for i, checkin in enumerate(ordered):
        if not checkin.scorable:
            continue
        fired_ids = []
        for rule in usable:
            fired = _fire(
                rule,
                instrument,
                ordered[: i + 1],
                care_plan_active=False,
                as_of=None,
                care_plan_start=None,
            )
            if fired is not None and fired.focus is checkin:
                fired_ids.append(rule.id)
        if fired_ids:
            out[checkin.key] = tuple(fired_ids)
    return out


def recovery_note(
    rule: Rule, instrument: Instrument, series: Iterable[CheckIn], *, care_plan_active: bool
) -> str:
    """The note on a completed alert Task: why the rule no longer fires, with the numbers."""
    ordered = _ordered(series)
    if rule.kind == "missed-checkin":
        if not care_plan_active:
            return "Alert closed: the care plan is no longer active."
        if ordered:
            return f"Check-in received on {_date(ordered[-1].authored)}."
        return "Alert closed: no check-in is overdue any more."
    scorable = [c for c in ordered if c.scorable and c.total is not None]
    if not scorable:
        return "Scores recovered: the rule no longer applies."
    latest = scorable[-1]
    total = instrument.scoring.total
    score_text = f"{instrument.id} {total.label.lower()} {_num(_exact(latest.total or 0))}"
    return (
        f"Scores recovered: '{rule.label}' no longer applies; "
        f"latest {score_text} on {_date(latest.authored)}."
    )
