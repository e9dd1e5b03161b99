"""Goal attainment scaling (GAS): the Kiresuk-Sherman summary T-score.

For goals rated x_i in -2..+2 with weights w_i and an assumed correlation rho between goal
scales::

    T = 50 + 10 * sum(w_i * x_i) / sqrt((1 - rho) * sum(w_i ** 2) + rho * (sum(w_i)) ** 2)

With equal weights (w_i = 1) and the customary rho = 0.3 this is
``50 + 10 * sum(x) / sqrt(0.7 * n + 0.3 * n ** 2)``. T = 50 means the goals were met as
expected on average; one point of T is a tenth of a standard deviation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.goals._model import Goal, Plan

#: The conventional inter-goal correlation of Kiresuk and Sherman.
DEFAULT_RHO = 0.3


def gas_t_score(
    ratings: Sequence[int],
    weights: Sequence[float] | None = None,
    *,
    rho: float = DEFAULT_RHO,
) -> float:
    """The summary T-score of ``ratings`` (each -2..+2); equal weights unless given."""
    where = "GAS"
    if not ratings:
        raise InvalidInputError(Problem(where, "ratings", "no GAS ratings to summarise"))
    if any(not -2 <= r <= 2 for r in ratings):
        raise InvalidInputError(Problem(where, "ratings", "GAS ratings run from -2 to +2"))
    w = [1.0] * len(ratings) if weights is None else [float(x) for x in weights]
    if len(w) != len(ratings):
        raise InvalidInputError(Problem(where, "weights", "one weight per rating"))
    if any(x <= 0 for x in w):
        raise InvalidInputError(Problem(where, "weights", "weights must be positive"))
    if not 0 <= rho < 1:
        raise InvalidInputError(Problem(where, "rho", "rho must be in [0, 1)"))
    numerator = sum(wi * xi for wi, xi in zip(w, ratings, strict=True))
    denominator = math.sqrt((1 - rho) * sum(wi * wi for wi in w) + rho * sum(w) ** 2)
    return 50 + 10 * numerator / denominator


@dataclass(frozen=True)
class GasSummary:
    """The T-score of one follow-up: all goals rated on the same day."""

    on: date
    t_score: float
    goal_keys: tuple[str, ...]
    ratings: tuple[int, ...]


def gas_summaries(plan: Plan) -> list[GasSummary]:
    """One summary per rating day, over the goals (and milestones) rated that day."""
    by_day: dict[date, list[tuple[Goal, int]]] = {}
    for goal in plan.all_goals():
        for rating in goal.gas:
            by_day.setdefault(rating.on, []).append((goal, rating.score))
    out = []
    for day in sorted(by_day):
        rated = by_day[day]
        scores = tuple(score for _, score in rated)
        out.append(
            GasSummary(day, gas_t_score(scores), tuple(goal.key for goal, _ in rated), scores)
        )
    return out
