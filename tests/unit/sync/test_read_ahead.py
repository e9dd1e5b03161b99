"""The sync reads and maps the next window while it sends this one (``sync.read_ahead``):
the windows arrive in order, the producer really runs ahead (in its own thread), at most
one window waits, a producer's error reaches the sync, and a sync that stops early closes
the producer."""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Iterator

import pytest

from alliance_fhir.sync.read_ahead import read_ahead

RUN = contextvars.ContextVar("RUN", default="none")


def test_windows_arrive_in_order_made_in_another_thread() -> None:
    threads: list[str] = []

    def windows() -> Iterator[int]:
        for n in range(5):
            threads.append(threading.current_thread().name)
            yield n

    assert list(read_ahead(windows())) == [0, 1, 2, 3, 4]
    assert set(threads) == {"sync-read-ahead"}


def test_the_next_window_is_made_while_this_one_is_in_use() -> None:
    second_made = threading.Event()

    def windows() -> Iterator[int]:
        yield 0
        second_made.set()
        yield 1

    ahead = read_ahead(windows())
    assert next(ahead) == 0
    # The consumer has not asked for window 1, yet it is being made.
    assert second_made.wait(timeout=10)
    assert list(ahead) == [1]


def test_at_most_one_window_waits() -> None:
    made: list[int] = []

    def windows() -> Iterator[int]:
        for n in range(10):
            made.append(n)
            yield n

    ahead = read_ahead(windows())
    assert next(ahead) == 0
    time.sleep(0.5)
    # 0 in use, 1 waiting, 2 made and held back until 1 is taken
    assert made == [0, 1, 2]
    assert list(ahead) == list(range(1, 10))


def test_a_producer_error_reaches_the_consumer_after_the_windows_before_it() -> None:
    def windows() -> Iterator[int]:
        yield 0
        raise ValueError("duplicate record assessment/a1 in one run")

    ahead = read_ahead(windows())
    assert next(ahead) == 0
    with pytest.raises(ValueError, match="duplicate record"):
        next(ahead)


def test_a_consumer_that_stops_early_closes_the_producer() -> None:
    closed = threading.Event()
    made: list[int] = []

    def windows() -> Iterator[int]:
        try:
            for n in range(100):
                made.append(n)
                yield n
        finally:
            closed.set()

    ahead = read_ahead(windows())
    assert next(ahead) == 0
    ahead.close()  # what a `for` loop left by an exception does
    assert closed.is_set()  # joined: closed before close() returned
    assert len(made) <= 3


def test_the_producer_sees_the_callers_context() -> None:
    seen: list[str] = []

    def windows() -> Iterator[int]:
        seen.append(RUN.get())
        yield 0

    token = RUN.set("run-1")
    try:
        assert list(read_ahead(windows())) == [0]
    finally:
        RUN.reset(token)
    assert seen == ["run-1"]


def test_a_list_is_used_as_it_is() -> None:
    assert list(read_ahead([[1], [2]])) == [[1], [2]]
