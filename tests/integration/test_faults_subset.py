"""A short subset of ``make faults`` in ``make test``: latency, resets mid-response, and the
client SIGKILLed mid-run, through a real toxiproxy in front of the test server.

toxiproxy is installed by ``scripts/install-toxiproxy`` (pinned, built with ``go install``);
when it cannot be installed or started these tests FAIL, they never skip. The full set of
scenarios (503/429 bursts, timeouts, the server SIGKILLed and restarted) is ``make faults``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, LogCapture

if str(REPO_ROOT) not in sys.path:  # the harness lives in <repo>/faults, beside tests/
    sys.path.insert(0, str(REPO_ROOT))

from faults.scenarios import SUBSET, Harness, run_scenario, table
from faults.shim import StatusShim
from faults.toxiproxy import Toxiproxy, ToxiproxyUnavailable, find_or_install


@pytest.fixture(scope="module")
def harness(
    fhir_base_url: str, tmp_path_factory: pytest.TempPathFactory, log_capture: LogCapture
) -> Iterator[Harness]:
    work = tmp_path_factory.mktemp("faults")
    try:
        binary = find_or_install()
        toxiproxy = Toxiproxy(binary, work / "toxiproxy.log")
        toxiproxy.start()
    except ToxiproxyUnavailable as exc:
        pytest.fail(f"toxiproxy is required for the fault subset: {exc}", pytrace=False)
    upstream = fhir_base_url.split("://", 1)[1].split("/", 1)[0]
    try:
        with StatusShim(fhir_base_url.rsplit("/fhir", 1)[0]) as shim:
            proxy = toxiproxy.proxy("hapi", upstream)
            yield Harness(fhir_base_url, proxy, shim, work, log_sink=log_capture.add)
    finally:
        toxiproxy.stop()


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
