"""Read ahead: the next window of records is produced in a thread while this one is sent.

Producing a window (files read, checked, scored, mapped, validated) is CPU work; sending it
is mostly waiting for the server. One window ahead, no more, so memory stays at two windows
however large the import, and the consumer sees the windows in their order. An error in the
producer is raised in the consumer; a consumer that stops early stops the producer after the
window it is on (the producer's generator is closed in its own thread).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Generator, Iterable, Sequence
from typing import TypeVar, cast

__all__ = ["read_ahead"]

T = TypeVar("T")

_ITEM, _ERROR, _DONE = range(3)


def read_ahead(items: Iterable[T], *, depth: int = 1) -> Generator[T, None, None]:
    """``items`` in order, the next ``depth`` produced in a background thread meanwhile.
    A sequence is already made: it is iterated as it is."""
    if isinstance(items, Sequence):
        yield from items
        return
    slots: queue.Queue[tuple[int, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(kind: int, value: object) -> bool:
        while not stop.is_set():
            try:
                slots.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not put(_ITEM, item):
                    break
            else:
                put(_DONE, None)
        except BaseException as exc:
            put(_ERROR, exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    # The producer sees the caller's context (log fields bound to the run).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(produce,), name="sync-read-ahead")
    thread.daemon = True
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == _DONE:
                return
            if kind == _ERROR:
                assert isinstance(value, BaseException)
                raise value
            yield cast(T, value)  # what the producer put
    finally:
        stop.set()
        thread.join()
