"""Send pipeline: the bundles of consecutive windows flow to the server without a pause.

A run plans one window at a time, but waiting for a window's last bundle before sending the
next window's first left a sender idle at every window boundary (the two bundles of a window
rarely take the same time) and put the next window's planning and people lookups on the
critical path. Here a run keeps ``concurrency`` bundles in flight and one more queued, across
window boundaries, so planning the next window overlaps the sends of this one.

What each window needs after its bundles are answered (the duplicate check, records found
by identifier whose content differs, merged updates refused with 412) runs in the caller's
thread, in window order, once every bundle of that window has an answer - and never while
a bundle could be handed to a sender instead (a follow-up makes requests of its own: run
first, it left a sender idle as long as it took). So it waits until the pipe is full, or
until ``LAG`` newer windows are queued behind it: a reader slower than the senders never
fills the pipe, and the duplicate check must still stop a server that ignores If-None-Exist
after a window or two, not at the end of the run. At the end of a run, when nothing is left
to hand out, a window's ``early`` part (the duplicate check) runs as soon as one of its
bundles is answered, not after the last: the run's last searches overlap its last sends.

A bundle that raises stops the run: nothing new is sent, the bundles already being sent
finish (their answers are recorded, as the state rules require) and the first error is
raised.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["SendPipeline"]

T = TypeVar("T")

#: Windows queued behind an answered one before its follow-up runs with room in the pipe:
#: with one, the instruments' duplicate check ran right after the first assessment bundle
#: was handed out and held the second back for its two searches (a sender idle 0.1-0.15 s
#: at the start of a first sync, at 25 ms of round trip).
LAG = 2


@dataclass(frozen=True)
class _Window:
    """A window's bundles being sent, and what runs once they are answered."""

    futures: list[Future[None]]
    after: Callable[[], None]
    early: Callable[[], None] | None


class SendPipeline:
    """At most ``concurrency`` bundles sent at once and one more waiting, for a whole run."""

    def __init__(self, concurrency: int) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="sync-send"
        )
        self._limit = max(1, concurrency) + 1
        self._in_flight: set[Future[None]] = set()
        self._windows: deque[_Window] = deque()

    def submit(
        self,
        send: Callable[[T], None],
        items: Iterable[T],
        after: Callable[[], None],
        *,
        early: Callable[[], None] | None = None,
    ) -> None:
        """Queue ``send(item)`` for each item (waiting while the pipe is full); ``after``
        runs here once all of them are answered. Each item is drawn before the wait for its
        room, so items a generator builds are built while the pipe is full. ``early`` may
        run here, any number of times (it must be safe to repeat), while the run drains and
        once any of them is answered."""
        futures: list[Future[None]] = []
        for item in items:
            self._make_room()
            future = self._pool.submit(send, item)
            self._in_flight.add(future)
            futures.append(future)
        self._windows.append(_Window(futures, after, early))
        self._reap()
        self._settle(keep=0 if len(self._in_flight) >= self._limit else LAG)

    def drain(self) -> None:
        """Wait for every bundle and run every window's follow-up (the end of a run)."""
        while self._windows:
            while self._in_flight:
                self._run_early()
                self._wait_one()
            self._settle()

    def close(self) -> None:
        """Send nothing more; bundles being sent finish (a failed or interrupted run)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _make_room(self) -> None:
        """Until one more bundle may be queued. Follow-ups (network calls of their own) run
        only while the pipe is full, so a sender never waits for one."""
        while True:
            self._reap()
            if len(self._in_flight) < self._limit:
                return
            if not self._settle(one=True):
                wait(self._in_flight, return_when=FIRST_COMPLETED)

    def _wait_one(self) -> None:
        """Until at least one bundle in flight is answered."""
        wait(self._in_flight, return_when=FIRST_COMPLETED)
        self._reap()
        self._settle()

    def _run_early(self) -> None:
        """The ``early`` part of each window with an answered bundle (in window order)."""
        for window in list(self._windows):
            if window.early is not None and any(
                f.done() and f.exception() is None for f in window.futures
            ):
                window.early()

    def _reap(self) -> None:
        """Forget the bundles answered; the first failure stops the run."""
        done = {f for f in self._in_flight if f.done()}
        self._in_flight -= done
        for future in done:
            future.result()

    def _settle(self, *, one: bool = False, keep: int = 0) -> bool:
        """Run the follow-up of each leading window whose bundles are all answered (``one``:
        of the first only; ``keep``: only while at least that many windows follow it); whether
        any ran."""
        ran = False
        while len(self._windows) > keep and all(f.done() for f in self._windows[0].futures):
            window = self._windows.popleft()
            for future in window.futures:
                self._in_flight.discard(future)
                future.result()
            window.after()
            ran = True
            if one:
                break
        return ran
