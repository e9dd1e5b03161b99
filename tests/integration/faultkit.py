"""The fault harness shared by the fault subset (``test_faults_subset.py``, in ``make test``)
and the EHR-profile fault matrix (``matrix_ehr_faults.py``, ``make ehr-matrix`` only).

``start_harness`` starts a real toxiproxy in front of the test server plus the HTTP status
shim, and yields a ``faults.scenarios.Harness`` over them; toxiproxy is stopped at the end.
When toxiproxy cannot be installed or started the calling test FAILS, it never skips.
Each test module wraps it in a module-scoped ``harness`` fixture of its own (one proxy name
per module, so their logs and proxies never mix). It also hands on what the modules use of
``faults.scenarios``, which is importable only once this module has put the repository on
``sys.path``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .conftest import REPO_ROOT, LogCapture

if str(REPO_ROOT) not in sys.path:  # the harness lives in <repo>/faults, beside tests/
    sys.path.insert(0, str(REPO_ROOT))

from faults.scenarios import PROFILE_SCENARIOS, SUBSET, Harness, run_scenario, table
from faults.shim import StatusShim
from faults.toxiproxy import Toxiproxy, ToxiproxyUnavailable, find_or_install

__all__ = ["PROFILE_SCENARIOS", "SUBSET", "Harness", "run_scenario", "start_harness", "table"]


@contextmanager
def start_harness(
    fhir_base_url: str, work: Path, log_capture: LogCapture, *, proxy_name: str, purpose: str
) -> Iterator[Harness]:
    """toxiproxy (proxy ``proxy_name``) and the status shim in front of ``fhir_base_url``."""
    try:
        binary = find_or_install()
        toxiproxy = Toxiproxy(binary, work / "toxiproxy.log")
        toxiproxy.start()
    except ToxiproxyUnavailable as exc:
        pytest.fail(f"toxiproxy is required for {purpose}: {exc}", pytrace=False)
    upstream = fhir_base_url.split("://", 1)[1].split("/", 1)[0]
    try:
        with StatusShim(fhir_base_url.rsplit("/fhir", 1)[0]) as shim:
            proxy = toxiproxy.proxy(proxy_name, upstream)
            yield Harness(fhir_base_url, proxy, shim, work, log_sink=log_capture.add)
    finally:
        toxiproxy.stop()
