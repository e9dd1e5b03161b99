"""The lookup tables and integer shortcuts give exactly what the long way gives (#15).

Scoring answers a choice code (and a mark already checked) from per-instrument tables,
sums ints where the values are whole and rounds in integers; record uuids are made without
UUID objects. Each is checked here against the plain definition it replaces.
"""

from __future__ import annotations

import math
import uuid
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alliance_fhir.adapters.record import RECORD_NAMESPACE, _uuid5, record_uuid
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.instruments.library import load_library
from alliance_fhir.instruments.schema import Instrument, ScoreDef
from alliance_fhir.instruments.scoring import (
    AnswerValue,
    _keyed_exact,
    _rounded,
    round_half_up,
    score,
)

INSTRUMENTS = load_library().all()


def _reference_rounding(value: Fraction, decimals: int) -> float:
    """Round half away from zero through Decimal, as scoring did before the tables."""
    scaled = math.floor(abs(value) * 10**decimals + Fraction(1, 2))
    if scaled == 0:
        return float(Decimal(0).scaleb(-decimals))
    rounded = Decimal(scaled).scaleb(-decimals)
    return float(-rounded if value < 0 else rounded)


def _reference_value(
    instrument: Instrument, sdef: ScoreDef, answers: dict[str, AnswerValue]
) -> float:
    """A complete answer set's score, the long way (every answer checked and keyed)."""
    items = instrument.score_items(sdef)
    total = sum((_keyed_exact(instrument, i, answers[i.link_id]) for i in items), Fraction(0))
    value = total if sdef.method == "sum" else total / len(items)
    return _reference_rounding(value, sdef.decimals)


@st.composite
def complete_answers(draw: st.DrawFn) -> tuple[Instrument, dict[str, AnswerValue]]:
    instrument = draw(st.sampled_from(INSTRUMENTS))
    answers: dict[str, AnswerValue] = {}
    for item in instrument.items:
        if item.type == "choice":
            assert item.scale is not None
            answers[item.link_id] = draw(
                st.sampled_from([p.code for p in instrument.scale(item.scale).points])
            )
        elif item.type == "decimal":
            assert item.analogue is not None
            scale = 10**item.analogue.decimals
            low, high = round(item.analogue.min * scale), round(item.analogue.max * scale)
            # ints and floats both: a whole mark may come as 7 or as 7.0
            n = draw(st.integers(low, high))
            answers[item.link_id] = draw(
                st.sampled_from([n / scale, *(() if n % scale else (n // scale,))])
            )
    return instrument, answers


@given(complete_answers())
def test_scores_equal_the_long_way(case: tuple[Instrument, dict[str, AnswerValue]]) -> None:
    instrument, answers = case
    for attempt in range(2):  # the second time the checked marks come from the table
        got = score(instrument, answers)
        assert got.total.value == _reference_value(instrument, instrument.scoring.total, answers)
        for sub, sdef in zip(got.subscales, instrument.scoring.subscales, strict=True):
            assert sub.value == _reference_value(instrument, sdef, answers), attempt


def test_a_boolean_never_passes_for_a_checked_mark() -> None:
    srs = next(i for i in INSTRUMENTS if any(it.type == "decimal" for it in i.items))
    line = next(it for it in srs.items if it.type == "decimal")
    assert line.analogue is not None
    whole = int(line.analogue.min) + 1
    answers: dict[str, AnswerValue] = {i.link_id: whole for i in srs.items if i.type == "decimal"}
    score(srs, answers)  # the mark ``whole`` is now in the table
    with pytest.raises(InvalidInputError) as caught:
        score(srs, {**answers, line.link_id: True})
    assert [p.field for p in caught.value.problems] == [line.link_id]


def test_a_mark_off_the_line_is_refused_after_good_ones() -> None:
    srs = next(i for i in INSTRUMENTS if any(it.type == "decimal" for it in i.items))
    line = next(it for it in srs.items if it.type == "decimal")
    assert line.analogue is not None
    answers: dict[str, AnswerValue] = {i.link_id: 1 for i in srs.items if i.type == "decimal"}
    score(srs, answers)
    with pytest.raises(InvalidInputError) as caught:
        score(srs, {**answers, line.link_id: line.analogue.max + 1})
    assert "outside" in caught.value.problems[0].reason


@given(
    st.fractions(max_denominator=10**6).filter(lambda f: abs(f) < 10**12),
    st.integers(0, 4),
)
def test_integer_rounding_equals_decimal_rounding(value: Fraction, decimals: int) -> None:
    got, want = _rounded(value, decimals), _reference_rounding(value, decimals)
    assert got == want
    assert math.copysign(1, got) == math.copysign(1, want)


def test_round_half_up_ties_away_from_zero() -> None:
    assert [round_half_up(v, 1) for v in (2.45, 2.55, -2.45, 0.04, -0.04)] == [
        2.5,
        2.6,
        -2.5,
        0.0,
        0.0,
    ]
    assert round_half_up(2.5, 0) == 3.0


@given(st.text(max_size=80))
def test_uuid5_equals_the_standard_library(name: str) -> None:
    assert _uuid5(RECORD_NAMESPACE.bytes, name) == str(uuid.uuid5(RECORD_NAMESPACE, name))


def test_record_uuid_is_the_same_with_or_without_the_namespace() -> None:
    plain = record_uuid("assessment", "a-1")
    assert plain == f"urn:uuid:{uuid.uuid5(RECORD_NAMESPACE, 'assessment/a-1')}"
    assert record_uuid("assessment", "a-1", namespace="https://other.example/ids") == plain
    assert record_uuid("goal", "a-1", namespace="https://other.example/ids") != record_uuid(
        "goal", "a-1"
    )
