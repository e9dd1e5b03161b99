"""Scoring answers to an instrument: exact, deterministic, and able to say why not.

Arithmetic is done on exact rationals. A float answer (or scale value) is read as the decimal
its ``repr`` shows (``7.3`` is 73/10, not the nearest binary fraction), so a total of VAS marks
is the sum a clinician would get on paper. Only the final value of each score is rounded, to
``ScoreDef.decimals`` places, half away from zero (``decimal.ROUND_HALF_UP``, never banker's
rounding): 2.45 -> 2.5, 2.5 -> 3.

Rules, per total or subscale (``ScoreDef``):

* ``sum`` or ``mean`` of the *keyed* values of its scored items; a ``reverse`` item scores
  ``min + max - value`` of its scale or analogue line.
* ``proration.method == "none"``: any unanswered item makes the value ``None``; ``reason``
  names the missing linkIds.
* ``proration.method == "mean"``: unanswered items are replaced by the mean of the answered
  items of the same score, when at least ``min_answered`` items and at least ``min_fraction``
  of them (both, when both are given) were answered; else ``None`` with the reason.
  A prorated value has ``prorated=True`` and a ``reason`` noting what was filled in.
* Text items are never scored. An answer to an unscored choice item is still checked against
  its scale.

Answers are refused (``InvalidInputError``, one Problem per bad answer) when the linkId is
unknown, a choice code is not on the item's scale, a number is outside the analogue line or
finer than its ``decimals``, or the type is wrong. A ``None`` answer counts as unanswered.
Reasons never repeat free-text answers: they may hold PHI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import TypeAlias

from alliance_fhir.exceptions import InvalidInputError, Problem, ScoringError
from alliance_fhir.instruments.lookup import MAX_MARKS, Exact, tables
from alliance_fhir.instruments.schema import Band, Instrument, Item, Proration, ScoreDef

__all__ = [
    "AnswerValue",
    "ScoreValue",
    "Scores",
    "item_value",
    "keyed_value",
    "round_half_up",
    "score",
]

#: choice: the scale point code (str); decimal: a number; text: str.
AnswerValue: TypeAlias = str | float | int


@dataclass(frozen=True)
class ScoreValue:
    """One computed score. ``value`` is ``None`` when it cannot be computed (see ``reason``)."""

    id: str
    label: str
    value: float | None
    answered: int
    expected: int
    prorated: bool
    reason: str | None


@dataclass(frozen=True)
class Scores:
    """Every score of one set of answers."""

    instrument_id: str
    total: ScoreValue
    subscales: tuple[ScoreValue, ...]
    band: Band | None
    below_cutoff: bool | None

    def subscale(self, score_id: str) -> ScoreValue:
        """The subscale with ``score_id`` (``KeyError`` if the instrument has none)."""
        for sub in self.subscales:
            if sub.id == score_id:
                return sub
        raise KeyError(score_id)


def item_value(instrument: Instrument, item: Item, answer: AnswerValue) -> float:
    """The value of ``answer`` to ``item`` before reverse keying.

    Raises ``InvalidInputError`` for an answer off the item's scale or line, and
    ``ScoringError`` for a text item (it has no value).
    """
    return float(_item_exact(instrument, item, answer))


def keyed_value(instrument: Instrument, item: Item, answer: AnswerValue) -> float:
    """The value of ``answer`` after reverse keying (``min + max - value`` for reverse items)."""
    return float(_keyed_exact(instrument, item, answer))


def round_half_up(value: float | Fraction | Decimal, decimals: int) -> float:
    """Round to ``decimals`` places, ties away from zero, exactly (floats read as their repr)."""
    return _rounded(_exact(value), decimals)


def score(instrument: Instrument, answers: Mapping[str, AnswerValue]) -> Scores:
    """Score ``answers`` (linkId -> answer) to ``instrument``.

    Raises ``InvalidInputError`` listing every unknown linkId and invalid answer. Scores that
    cannot be computed come back with ``value=None`` and a reason rather than raising.
    """
    keyed: dict[str, Exact] = {}
    problems: list[Problem] = []
    known = {i.link_id: i for i in instrument.items}
    table = tables(instrument)
    for link_id in sorted(answers):
        answer = answers[link_id]
        fast = table.keyed.get(link_id)
        kind = type(answer)
        # a choice code on its scale, or a mark already checked on its line: the common case
        # (exact types only: True must not pass for 1)
        if fast is not None and (kind is str or kind is int or kind is float):
            found = fast.get(answer)
            if found is not None:
                keyed[link_id] = found
                continue
        item = known.get(link_id)
        if item is None:
            problems.append(_problem(instrument, str(link_id), "no item has this linkId"))
            continue
        if answer is None:  # tolerated: the same as not answering
            continue
        try:
            if item.type == "text":
                _check_text(instrument, item, answer)
                continue
            value = _whole(_keyed_exact(instrument, item, answer))
        except InvalidInputError as exc:
            problems.extend(exc.problems)
            continue
        if fast is not None and (kind is int or kind is float) and len(fast) < MAX_MARKS:
            fast[answer] = value
        if item.scored:
            keyed[link_id] = value
    if problems:
        raise InvalidInputError(problems)

    scoring = instrument.scoring
    total = _score_one(table.items_of(scoring.total), scoring.total, keyed)
    subscales = tuple(_score_one(table.items_of(s), s, keyed) for s in scoring.subscales)
    band: Band | None = None
    below: bool | None = None
    if total.value is not None:
        band = next((b for b in scoring.bands if b.low <= total.value <= b.high), None)
        cutoff = scoring.cutoff
        if cutoff is not None:
            if cutoff.rule == "below":
                below = total.value < cutoff.value
            else:
                below = total.value <= cutoff.value
    return Scores(instrument.id, total, subscales, band, below)


# -- internals ---------------------------------------------------------------------------


def _problem(instrument: Instrument, link_id: str, reason: str) -> Problem:
    return Problem(f"answers to {instrument.id}", link_id, reason, path=f"answers.{link_id}")


def _exact(value: object) -> Fraction:
    """An exact rational for an int, a float (as its shortest repr) or a Decimal."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number here")
    if isinstance(value, int | Fraction):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("not a finite number")
        return Fraction(value)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def _item_exact(instrument: Instrument, item: Item, answer: object) -> Fraction:
    if item.type == "text":
        raise ScoringError(_problem(instrument, item.link_id, "a text item has no value"))
    if item.type == "choice":
        assert item.scale is not None  # guaranteed by Item validation
        scale = instrument.scale(item.scale)
        if not isinstance(answer, str):
            reason = (
                f"expected the code of a point on scale {scale.id} (a string), "
                f"got {type(answer).__name__}"
            )
            raise InvalidInputError(_problem(instrument, item.link_id, reason))
        for point in scale.points:
            if point.code == answer:
                return _exact(point.value)
        codes = ", ".join(p.code for p in scale.points)
        reason = f"{answer!r} is not a code of scale {scale.id} ({codes})"
        raise InvalidInputError(_problem(instrument, item.link_id, reason))
    analogue = item.analogue
    assert analogue is not None  # guaranteed by Item validation
    try:
        if isinstance(answer, str):
            raise TypeError("expected a number, got str")
        value = _exact(answer)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(_problem(instrument, item.link_id, str(exc))) from None
    low, high = _exact(analogue.min), _exact(analogue.max)
    if not low <= value <= high:
        reason = f"{answer} is outside {_fmt(low)}-{_fmt(high)}"
        raise InvalidInputError(_problem(instrument, item.link_id, reason))
    if (value * 10**analogue.decimals).denominator != 1:
        reason = f"{answer} has more than {analogue.decimals} decimal place(s)"
        raise InvalidInputError(_problem(instrument, item.link_id, reason))
    return value


def _keyed_exact(instrument: Instrument, item: Item, answer: object) -> Fraction:
    value = _item_exact(instrument, item, answer)
    if not item.reverse:
        return value
    low, high = instrument.item_range(item)
    return _exact(low) + _exact(high) - value


def _check_text(instrument: Instrument, item: Item, answer: object) -> None:
    if not isinstance(answer, str):
        reason = f"a text item takes a string, got {type(answer).__name__}"
        raise InvalidInputError(_problem(instrument, item.link_id, reason))


def _whole(value: Fraction) -> Exact:
    """An int for a whole fraction: sums of ints are what make scoring cheap."""
    return value.numerator if value.denominator == 1 else value


def _score_one(items: tuple[str, ...], sdef: ScoreDef, keyed: Mapping[str, Exact]) -> ScoreValue:
    expected = len(items)
    got = [keyed[i] for i in items if i in keyed]
    missing = [i for i in items if i not in keyed]
    answered = len(got)

    def result(value: Exact | None, prorated: bool, reason: str | None) -> ScoreValue:
        if value is None:
            rounded = None
        elif type(value) is int:
            rounded = float(value)  # what rounding a whole number to any places gives
        else:
            rounded = _rounded(Fraction(value), sdef.decimals)
        return ScoreValue(sdef.id, sdef.label, rounded, answered, expected, prorated, reason)

    if expected == 0:
        return result(None, False, "this score has no scored items")
    if not missing:
        total: Exact = sum(got, 0)
        if sdef.method == "sum":
            return result(total, False, None)
        return result(_whole(Fraction(total, expected)), False, None)
    gap = f"{len(missing)} of {expected} items unanswered ({', '.join(missing)})"
    if answered == 0:
        return result(None, False, f"no items answered ({', '.join(missing)})")
    if sdef.proration.method == "none":
        return result(None, False, f"{gap}; this score is not prorated")
    need = _needed(sdef.proration, expected)
    if answered < need:
        return result(None, False, f"{gap}; proration needs at least {need} answered")
    mean = Fraction(sum(got, 0)) / answered
    value = mean * expected if sdef.method == "sum" else mean
    return result(value, True, f"prorated: {gap} replaced by the mean of the answered items")


def _needed(proration: Proration, expected: int) -> int:
    """How many items must be answered for mean proration to apply (at least one)."""
    need = 1
    if proration.min_answered is not None:
        need = max(need, proration.min_answered)
    if proration.min_fraction is not None:
        need = max(need, math.ceil(_exact(proration.min_fraction) * expected))
    return need


def _rounded(value: Fraction, decimals: int) -> float:
    """``value`` rounded half away from zero to ``decimals`` places, as the nearest float.

    In integers: floor(|n/d| * 10**k + 1/2) is (2|n| * 10**k + d) // 2d, and int / int is
    correctly rounded, as the Decimal this used to go through was (a tenth of the time).
    """
    num: int = value.numerator
    den: int = value.denominator
    scale: int = 10**decimals
    scaled = (2 * abs(num) * scale + den) // (2 * den)
    if scaled == 0:
        return 0.0
    rounded = scaled / scale
    return -rounded if num < 0 else rounded


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(float(value))
