"""Properties of scoring over every bundled instrument, for any complete valid answers."""

from __future__ import annotations

import random
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from alliance_fhir.instruments.library import load_library
from alliance_fhir.instruments.schema import Instrument, Item
from alliance_fhir.instruments.scoring import AnswerValue, item_value, keyed_value, score

INSTRUMENTS = load_library().all()


def answer_for(instrument: Instrument, item: Item) -> st.SearchStrategy[AnswerValue]:
    if item.type == "choice":
        assert item.scale is not None
        return st.sampled_from([p.code for p in instrument.scale(item.scale).points])
    if item.type == "decimal":
        assert item.analogue is not None
        scale = 10**item.analogue.decimals
        low = round(item.analogue.min * scale)
        high = round(item.analogue.max * scale)
        return st.integers(low, high).map(lambda n: n / scale)
    # a fixed alphabet: st.text() builds a large Unicode table on first use
    return st.text(alphabet="abc xyz.?", max_size=40)


@st.composite
def complete_answers(draw: st.DrawFn) -> tuple[Instrument, dict[str, AnswerValue]]:
    instrument = draw(st.sampled_from(INSTRUMENTS))
    answers = {i.link_id: draw(answer_for(instrument, i)) for i in instrument.items}
    return instrument, answers


def bounds(instrument: Instrument) -> tuple[float, float]:
    total = instrument.scoring.total
    ranges = [instrument.item_range(i) for i in instrument.score_items(total)]
    low = sum((Fraction(r[0]) for r in ranges), Fraction(0))
    high = sum((Fraction(r[1]) for r in ranges), Fraction(0))
    if total.method == "mean":
        low, high = low / len(ranges), high / len(ranges)
    return float(low), float(high)


@given(complete_answers())
def test_total_within_instrument_range(case: tuple[Instrument, dict[str, AnswerValue]]) -> None:
    instrument, answers = case
    result = score(instrument, answers)
    assert result.total.value is not None
    low, high = bounds(instrument)
    assert low <= result.total.value <= high
    assert all(s.value is not None for s in result.subscales)
    assert not result.total.prorated
    if instrument.scoring.cutoff is not None:
        assert result.below_cutoff is not None


@given(complete_answers(), st.randoms())
def test_answer_order_does_not_matter(
    case: tuple[Instrument, dict[str, AnswerValue]], rnd: random.Random
) -> None:
    instrument, answers = case
    keys = list(answers)
    rnd.shuffle(keys)
    assert score(instrument, {k: answers[k] for k in keys}) == score(instrument, answers)


@given(st.data())
def test_reverse_keying_is_an_involution(data: st.DataObject) -> None:
    instrument = data.draw(st.sampled_from(INSTRUMENTS))
    item = data.draw(st.sampled_from([i for i in instrument.items if i.scored]))
    answer = data.draw(answer_for(instrument, item))
    low, high = instrument.item_range(item)
    plain = item.model_copy(update={"reverse": False})
    flipped = item.model_copy(update={"reverse": True})
    once = keyed_value(instrument, flipped, answer)
    assert low <= once <= high
    # reversing the reversed value gives the raw value back
    assert Fraction(str(low)) + Fraction(str(high)) - Fraction(str(once)) == Fraction(
        str(keyed_value(instrument, plain, answer))
    )
    assert keyed_value(instrument, plain, answer) == item_value(instrument, item, answer)
