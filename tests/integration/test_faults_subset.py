"""A short subset of ``make faults`` in ``make test``: latency, resets mid-response, and the
client SIGKILLed mid-run, through a real toxiproxy in front of the test server.

toxiproxy is installed by ``scripts/install-toxiproxy`` (pinned, built with ``go install``);
when it cannot be installed or started these tests FAIL, they never skip. The full set of
scenarios (503/429 bursts, timeouts, the server SIGKILLed and restarted) is ``make faults``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import LogCapture
from .faultkit import SUBSET, Harness, run_scenario, start_harness, table


@pytest.fixture(scope="module")
def harness(
    fhir_base_url: str, tmp_path_factory: pytest.TempPathFactory, log_capture: LogCapture
) -> Iterator[Harness]:
    work = tmp_path_factory.mktemp("faults")
    with start_harness(
        fhir_base_url, work, log_capture, proxy_name="hapi", purpose="the fault subset"
    ) as harness:
        yield harness


@pytest.mark.parametrize("name", SUBSET)
def test_scenario_loses_and_duplicates_nothing(
    name: str, harness: Harness, fhir_reset: Callable[[], None], tmp_path: Path
) -> None:
    outcome = run_scenario(harness, name)
    print(table([outcome]))
    assert outcome.error is None, outcome.error
    assert outcome.check is not None
    assert outcome.check.expected > 150
    assert outcome.check.duplicates == 0
    assert outcome.check.lost == 0
    assert outcome.check.unexpected == 0
    assert outcome.check.state_errors == []
    assert outcome.survived
    if name == "client-killed":
        assert "killed" in outcome.under_fault  # the client really died mid-run
