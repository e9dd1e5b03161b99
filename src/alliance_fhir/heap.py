"""How a run uses Python's garbage collector: the long-lived heap set aside, young
collections rarer; put back as it was when the run ends.

A first sync of 711 resources spent 136-235 ms of its ~1 s of CPU in the collector, most
of it in one full collection walking every object the process had made before the run
(pydantic's and fhir.resources' schemas and models, the instrument library, the modules).
None of that becomes garbage during a run. ``gc.freeze`` moves it out of the collector's
sight for the run, and a young-generation threshold of 10,000 instead of 700 collects the
run's own short-lived dicts a fourteenth as often; together they left 19-50 ms (measured
with ``gc.callbacks``, BENCHMARKS.md). Reference counting frees almost all of a run's
garbage anyway; only cycles wait for a collection, and they still get one.

The settings are the process's: an application that embeds the API gets its own back when
the last run in flight ends (runs in several threads share one pause), and a heap the
application froze itself (before forking workers, say) is left frozen.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

__all__ = ["RUN_THRESHOLD", "during_run", "run_heap"]

P = ParamSpec("P")
R = TypeVar("R")

#: Allocations between young collections during a run (Python's default is 700), and
#: young collections per middle one, middle per full one.
RUN_THRESHOLD = (10_000, 50, 100)

_lock = threading.Lock()
_depth = 0
_saved: tuple[int, int, int] | None = None
_froze = False


@contextmanager
def run_heap() -> Iterator[None]:
    """For the duration of a run: what existed before it is frozen, collections are rarer.
    Re-entrant and thread-safe; the outermost exit restores the thresholds and unfreezes."""
    global _depth, _saved, _froze
    with _lock:
        if _depth == 0:
            _saved = gc.get_threshold()
            _froze = gc.get_freeze_count() == 0  # a heap frozen by the application stays so
            if _froze:
                gc.freeze()
            gc.set_threshold(*RUN_THRESHOLD)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                if _saved is not None:
                    gc.set_threshold(*_saved)
                if _froze:
                    gc.unfreeze()


def during_run(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` called inside :func:`run_heap` (the API's run entry points)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with run_heap():
            return fn(*args, **kwargs)

    return wrapper
