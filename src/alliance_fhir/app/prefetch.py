"""A call started early in a thread of its own; its answer (or its error) given when asked.

A first sync spends a few hundred milliseconds building and validating the instruments
before it has anything to send, and only then asks the server for its CapabilityStatement
(the write strategy depends on it): a round trip plus the server's own time, all on the
critical path. Started while the instruments are built, the two overlap.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

__all__ = ["Prefetch"]

T = TypeVar("T")


class Prefetch(Generic[T]):
    """``call()`` running now; :meth:`result` waits for it and returns or raises as the call
    did. The caller's context (the run's log fields) goes with it."""

    def __init__(self, call: Callable[[], T]) -> None:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        try:
            self._future: Future[T] = pool.submit(contextvars.copy_context().run, call)
        finally:
            pool.shutdown(wait=False)

    def result(self) -> T:
        return self._future.result()
