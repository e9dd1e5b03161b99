"""A call started early: its answer or its own error when asked, with the caller's context."""

from __future__ import annotations

import contextvars
import threading

import pytest

from alliance_fhir.app.prefetch import Prefetch
from alliance_fhir.exceptions import RetriableError

RUN = contextvars.ContextVar("run", default="none")


def test_the_call_runs_in_another_thread_before_it_is_asked_for() -> None:
    ran = threading.Event()
    caller = threading.get_ident()

    def call() -> int:
        ran.set()
        return threading.get_ident()

    early = Prefetch(call)
    assert ran.wait(5)  # under way without anyone asking
    assert early.result() != caller


def test_its_error_is_raised_when_asked_for() -> None:
    def call() -> int:
        raise RetriableError("server busy")

    early = Prefetch(call)
    with pytest.raises(RetriableError, match="server busy"):
        early.result()


def test_the_callers_context_goes_with_it() -> None:
    token = RUN.set("run-7")
    try:
        early = Prefetch(RUN.get)
    finally:
        RUN.reset(token)
    assert early.result() == "run-7"
