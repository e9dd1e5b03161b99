"""Retrying idempotent requests: only RetriableError, exponential backoff with jitter,
never sooner than the server's Retry-After, never past a total deadline.

When the next sleep would cross the deadline we stop *before* sleeping and re-raise the last
RetriableError (its ``retry_after`` tells a scheduler when to come back). The deadline is the
budget: a server restarting for 20-40 s is waited for. ``max_attempts`` is an optional extra
cap (None, the default, means "until the deadline"); a count alone ran out in ~25 s.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from alliance_fhir.exceptions import ConfigError, RetriableError

T = TypeVar("T")

_rng = random.SystemRandom()


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: total deadline (seconds), delays, and optionally a cap on attempts
    (including the first; None: as many as fit in the deadline)."""

    max_attempts: int | None = None
    base_delay: float = 0.5
    max_delay: float = 30.0
    deadline: float = 120.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ConfigError("RetryPolicy.max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay or self.deadline <= 0:
            raise ConfigError("RetryPolicy needs 0 <= base_delay <= max_delay and deadline > 0")

    def backoff(self, attempt: int) -> float:
        """Delay after failed attempt ``attempt`` (1-based): equal jitter on 2**n growth."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + _rng.uniform(0, ceiling / 2)


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    on_retry: Callable[[RetriableError, int, float], None],
) -> T:
    """Call ``fn`` until it succeeds, raises a non-retriable error, or the policy runs out.

    ``clock`` is monotonic seconds (injectable so tests control the deadline);
    ``on_retry(error, attempt, delay)`` runs before each sleep.
    """
    start = clock()

    def wait(state: tenacity.RetryCallState) -> float:
        delay = policy.backoff(state.attempt_number)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetriableError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    def stop(state: tenacity.RetryCallState) -> bool:
        if policy.max_attempts is not None and state.attempt_number >= policy.max_attempts:
            return True
        return (clock() - start) + (state.upcoming_sleep or 0.0) > policy.deadline

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RetriableError):
            on_retry(error, state.attempt_number, state.upcoming_sleep)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(RetriableError),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
