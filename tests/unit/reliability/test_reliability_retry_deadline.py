"""A server restarting (HAPI takes 20-40 s) is waited for: the retry budget is the deadline
(``retry_deadline_seconds``, 120 s by default), not an attempt count that runs out first."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from alliance_fhir.app.connect import connect
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import RetriableError

BASE = "http://fhir.test/fhir"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def monotonic(self) -> float:
        return self.now


def _client(tmp_path: Path, time: FakeTime, down_for: float, **values: object) -> object:
    """A client made from settings like the CLI's, whose server refuses connections for
    ``down_for`` seconds of fake time, then answers."""
    up_at = time.now + down_for

    def handler(request: httpx.Request) -> httpx.Response:
        if time.now < up_at:
            raise httpx.ConnectError("Connection refused", request=request)
        return httpx.Response(
            200,
            json={"resourceType": "Patient", "id": "p1"},
            headers={"Content-Type": "application/fhir+json"},
        )

    settings = Settings(server_url=BASE, state_path=tmp_path / "s.sqlite3", **values)
    client = connect(settings, transport=httpx.MockTransport(handler))
    client._sleep = time.sleep  # the seam the client's own tests use via its constructor
    client._clock = time.monotonic
    return client


def test_a_server_restarting_for_40_seconds_is_waited_for(tmp_path: Path) -> None:
    time = FakeTime()
    client = _client(tmp_path, time, down_for=40.0)
    started = time.now
    assert client.read("Patient", "p1").resource["id"] == "p1"  # type: ignore[attr-defined]
    assert 40.0 <= time.now - started <= 120.0


def test_a_server_that_stays_down_is_tried_until_the_deadline(tmp_path: Path) -> None:
    time = FakeTime()
    client = _client(tmp_path, time, down_for=1e9)
    started = time.now
    with pytest.raises(RetriableError):
        client.read("Patient", "p1")  # type: ignore[attr-defined]
    # the last sleep is at most max_delay (30 s): giving up earlier would waste the budget
    assert 90.0 <= time.now - started <= 120.0


def test_an_explicit_attempt_cap_is_still_honoured(tmp_path: Path) -> None:
    time = FakeTime()
    client = _client(tmp_path, time, down_for=40.0, retry_attempts=2)
    with pytest.raises(RetriableError):
        client.read("Patient", "p1")  # type: ignore[attr-defined]
    assert time.now - 1000.0 < 5.0
