"""The send pipeline: bundles of consecutive windows overlap, follow-ups run in window
order once their window is answered, a failure stops new sends and lets running ones land."""

from __future__ import annotations

import functools
import threading
import time

import pytest

from alliance_fhir.sync.pipeline import SendPipeline


def test_the_next_windows_bundles_start_before_this_windows_last_is_answered() -> None:
    started: dict[str, float] = {}
    finished: dict[str, float] = {}
    lock = threading.Lock()

    def send(name: str) -> None:
        with lock:
            started[name] = time.monotonic()
        time.sleep(0.3 if name == "w1-slow" else 0.02)
        with lock:
            finished[name] = time.monotonic()

    pipe = SendPipeline(2)
    try:
        pipe.submit(send, ["w1-fast", "w1-slow"], lambda: None)
        pipe.submit(send, ["w2-a", "w2-b"], lambda: None)
        pipe.drain()
    finally:
        pipe.close()
    assert started["w2-a"] < finished["w1-slow"]
    assert started["w2-b"] < finished["w1-slow"]


def test_follow_ups_run_in_window_order_after_each_windows_answers() -> None:
    answered: list[str] = []
    order: list[tuple[str, list[str]]] = []

    def send(name: str) -> None:
        time.sleep(0.15 if name.startswith("w1") else 0.01)
        answered.append(name)

    pipe = SendPipeline(2)
    try:
        pipe.submit(send, ["w1-a"], lambda: order.append(("w1", list(answered))))
        pipe.submit(send, ["w2-a", "w2-b"], lambda: order.append(("w2", list(answered))))
        pipe.drain()
    finally:
        pipe.close()
    assert [w for w, _ in order] == ["w1", "w2"]  # w2's bundles were answered first
    assert "w1-a" in order[0][1]
    assert {"w2-a", "w2-b"} <= set(order[1][1])


def test_never_more_than_concurrency_sent_at_once() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def send(_: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    pipe = SendPipeline(2)
    try:
        for window in range(5):
            pipe.submit(send, range(window * 3, window * 3 + 3), lambda: None)
        pipe.drain()
    finally:
        pipe.close()
    assert most == 2


def test_a_failed_bundle_stops_the_run_and_what_is_in_flight_lands() -> None:
    landed: list[int] = []
    follow_ups: list[int] = []

    def send(n: int) -> None:
        if n == 1:
            raise RuntimeError("refused")
        time.sleep(0.05)
        landed.append(n)

    def run() -> None:
        pipe = SendPipeline(2)
        try:
            for window in range(10):
                pipe.submit(send, [window], functools.partial(follow_ups.append, window))
            pipe.drain()
        finally:
            pipe.close()

    with pytest.raises(RuntimeError, match="refused"):
        run()
    assert 0 in landed  # sent before the failure: answered and kept
    assert max(landed) < 5  # nothing much queued behind the failure was sent
    assert 1 not in follow_ups  # the failed window's follow-up never ran


def test_a_ready_follow_up_waits_until_the_next_windows_bundles_are_queued() -> None:
    """A follow-up makes requests of its own: run while a sender has nothing to do, it
    would leave that sender idle for as long as it takes."""
    events: list[str] = []
    w2_started = threading.Event()

    def send(name: str) -> None:
        if name == "w2-a":
            events.append("w2-a sent")
            w2_started.set()
        else:
            time.sleep(0.03)  # not answered before its submit returns

    def w1_follow_up() -> None:
        w2_started.wait(1)  # long enough for a queued bundle to start
        events.append("w1 follow-up")

    pipe = SendPipeline(2)
    try:
        # three bundles fill the pipe (two sent, one queued); all are answered by the next
        pipe.submit(send, ["w1-a", "w1-b", "w1-c"], w1_follow_up)
        time.sleep(0.2)
        pipe.submit(send, ["w2-a"], lambda: None)
        pipe.drain()
    finally:
        pipe.close()
    assert events == ["w2-a sent", "w1 follow-up"]


def test_at_the_end_a_windows_early_part_runs_once_one_of_its_bundles_is_answered() -> None:
    """The duplicate check of the run's last window overlaps its slowest bundle instead of
    following it; ``after`` still waits for every bundle."""
    events: list[str] = []
    slow_done = threading.Event()

    def send(name: str) -> None:
        if name == "slow":
            time.sleep(0.3)
            slow_done.set()

    def early() -> None:
        events.append("early, slow answered" if slow_done.is_set() else "early, slow in flight")

    pipe = SendPipeline(2)
    try:
        pipe.submit(send, ["fast", "slow"], lambda: events.append("after"), early=early)
        pipe.drain()
    finally:
        pipe.close()
    assert events[0] == "early, slow in flight"
    assert events[-1] == "after"


def test_with_room_in_the_pipe_a_follow_up_waits_for_two_newer_windows() -> None:
    """The first sync's instruments window is answered before the first assessment window
    is handed out: its duplicate check (two searches) must not hold back the second one,
    which the idle sender could take. Yet with a reader slower than the senders the pipe
    never fills, so the check still runs two windows later, not at the end of the run."""
    ran: list[str] = []

    def send(name: str) -> None:
        if name != "w0":
            time.sleep(0.3)

    pipe = SendPipeline(2)
    try:
        pipe.submit(send, ["w0"], lambda: ran.append("w0"))
        time.sleep(0.1)  # w0 answered
        pipe.submit(send, ["w1"], lambda: ran.append("w1"))
        assert ran == []  # a sender is idle: the next window comes first
        pipe.submit(send, ["w2"], lambda: ran.append("w2"))
        assert ran == ["w0"]  # two windows behind it: run now, with both senders busy
        pipe.drain()
    finally:
        pipe.close()
    assert ran == ["w0", "w1", "w2"]
