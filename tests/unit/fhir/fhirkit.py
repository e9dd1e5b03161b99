"""Helpers for FHIR client unit tests: fake time, a recording MockTransport, responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

BASE = "https://fhir.example.org/fhir"


class FakeTime:
    """Monotonic clock + sleep that only advances a number: tests never really wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


class Recorder:
    """A MockTransport whose handler is swappable and which records every request."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def fhir_json(status: int, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    """A response with an application/fhir+json body."""
    hdrs = {
        "Content-Type": "application/fhir+json",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    content = json.dumps(body).encode() if body is not None else b""
    return httpx.Response(status, content=content, headers=hdrs)


def outcome(diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": "processing", "diagnostics": diagnostics}],
    }


def sequence(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering with ``responses`` in order (exceptions are raised)."""
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler
