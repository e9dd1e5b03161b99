"""The fault subset against every EHR-like profile (issue #13 item 9), for ``make ehr-matrix``
only: a 503 burst on writes, the client SIGKILLed mid-run then run again, and the state file
deleted between two runs, each through ``/profiles/<name>/fhir``. Each ends with every
expected record on the server exactly once (by identifier), nothing lost, the state store
agreeing with the server.

Not named ``test_*``: ``make test`` does not collect it (its budget holds a lost answer per
profile of the slice, in test_ehr_profiles.py); ``make ehr-matrix`` names it explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import LogCapture
from .faultkit import PROFILE_SCENARIOS, Harness, run_scenario, start_harness, table
from .test_ehr_profiles import PROFILES


@pytest.fixture(scope="module")
def harness(
    fhir_base_url: str, tmp_path_factory: pytest.TempPathFactory, log_capture: LogCapture
) -> Iterator[Harness]:
    work = tmp_path_factory.mktemp("faults")
    with start_harness(
        fhir_base_url, work, log_capture, proxy_name="hapi-profiles", purpose="the fault matrix"
    ) as harness:
        yield harness


@pytest.mark.parametrize("name", sorted(PROFILE_SCENARIOS))
@pytest.mark.parametrize("profile", PROFILES)
def test_fault_on_profile_loses_and_duplicates_nothing(
    profile: str, name: str, harness: Harness, fhir_reset: Callable[[], None], tmp_path: Path
) -> None:
    harness.profile = profile
    try:
        outcome = run_scenario(harness, name, PROFILE_SCENARIOS)
    finally:
        harness.profile = None
    print(f"\n{profile}:\n{table([outcome])}")
    assert outcome.error is None, outcome.error
    assert outcome.check is not None
    assert outcome.check.expected > 150
    assert outcome.check.duplicates == 0
    assert outcome.check.lost == 0
    assert outcome.check.unexpected == 0
    assert outcome.check.state_errors == []
    assert outcome.survived
    if name == "client-killed":
        assert "killed" in outcome.under_fault
