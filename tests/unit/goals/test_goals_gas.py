"""The Kiresuk-Sherman summary T-score, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.goals import gas_summaries, gas_t_score

from .conftest import load_example


def test_one_goal_is_fifty_plus_ten_per_step() -> None:
    # n = 1: denominator sqrt(0.7 * 1 + 0.3 * 1) = 1
    assert gas_t_score([0]) == pytest.approx(50.0)
    assert gas_t_score([2]) == pytest.approx(70.0)
    assert gas_t_score([-1]) == pytest.approx(40.0)


def test_three_goals_by_hand() -> None:
    # n = 3, sum = 3: 50 + 30 / sqrt(0.7 * 3 + 0.3 * 9) = 50 + 30 / sqrt(4.8) = 63.6931...
    assert gas_t_score([2, 1, 0]) == pytest.approx(63.6931, abs=1e-4)
    # all as expected, and balanced ratings, both give exactly 50
    assert gas_t_score([0, 0, 0]) == pytest.approx(50.0)
    assert gas_t_score([1, 0, -1]) == pytest.approx(50.0)


def test_four_goals_by_hand() -> None:
    # n = 4, sum = -3: 50 - 30 / sqrt(0.7 * 4 + 0.3 * 16) = 50 - 30 / 2.75681 = 39.1179
    assert gas_t_score([-1, -1, -1, 0]) == pytest.approx(39.1179, abs=1e-4)


def test_weights_by_hand() -> None:
    # w = (2, 1), x = (1, -2): 50 + 10 * 0 / ... = 50
    assert gas_t_score([1, -2], [2, 1]) == pytest.approx(50.0)
    # w = (3, 1), x = (2, 0): 50 + 60 / sqrt(0.7 * 10 + 0.3 * 16) = 50 + 60 / sqrt(11.8)
    assert gas_t_score([2, 0], [3, 1]) == pytest.approx(50 + 60 / math.sqrt(11.8))


@pytest.mark.parametrize(
    ("ratings", "weights"),
    [([], None), ([3], None), ([1, 1], [1.0]), ([1], [0.0])],
)
def test_bad_input_is_refused(ratings: list[int], weights: list[float] | None) -> None:
    with pytest.raises(InvalidInputError):
        gas_t_score(ratings, weights)


@given(st.lists(st.integers(-2, 2), min_size=1, max_size=12))
def test_mirror_ratings_mirror_around_fifty(ratings: list[int]) -> None:
    up = gas_t_score(ratings)
    down = gas_t_score([-r for r in ratings])
    assert up - 50 == pytest.approx(50 - down)


def test_summaries_group_ratings_by_day() -> None:
    plan = load_example("plan-mrn-1003.yaml")
    summaries = gas_summaries(plan)
    assert [s.on.isoformat() for s in summaries] == ["2023-12-01", "2024-02-20"]
    first, last = summaries
    assert first.goal_keys == ("work", "gym")
    # two goals rated 0 and -1: 50 - 10 / sqrt(0.7 * 2 + 0.3 * 4) = 50 - 10 / sqrt(2.6)
    assert first.t_score == pytest.approx(50 - 10 / math.sqrt(2.6))
    assert last.t_score == pytest.approx(70.0)
