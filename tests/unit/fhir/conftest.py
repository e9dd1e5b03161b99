"""Fixtures for FHIR client unit tests (helpers live in fhirkit.py)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fhirkit import BASE, FakeTime, Recorder

from alliance_fhir import log as alog
from alliance_fhir.fhir import FhirClient, RetryPolicy


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def make_client(fake_time: FakeTime) -> Iterator[Callable[..., tuple[FhirClient, Recorder]]]:
    clients: list[FhirClient] = []

    def make(
        handler: Callable[[httpx.Request], httpx.Response], **kw: Any
    ) -> tuple[FhirClient, Recorder]:
        recorder = Recorder(handler)
        kw.setdefault(
            "retry", RetryPolicy(max_attempts=6, base_delay=0.5, max_delay=8, deadline=60)
        )
        client = FhirClient(
            BASE,
            transport=recorder.transport,
            sleep=fake_time.sleep,
            clock=fake_time.monotonic,
            **kw,
        )
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Route alliance_fhir logging (JSON, DEBUG) into a StringIO for the test."""
    stream = io.StringIO()
    alog.configure(level="DEBUG", json=True, stream=stream)
    yield stream
    alog.configure()
