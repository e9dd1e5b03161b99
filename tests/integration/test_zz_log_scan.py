"""Runs last (conftest moves it to the end): no log line of the integration suite carries PHI.

``LOG_CAPTURE`` holds every line alliance-fhir emitted while an integration test ran,
whatever stream or level that test configured, plus the stderr of CLI subprocesses (see
``conftest.py``). This module first adds a demo-like run of its own at DEBUG level (seed,
publish, push assessments and goals, pull the goals back, score), so the scan is never of an
empty buffer, then looks for every synthetic PHI value of ``examples/`` (``phikit``: names,
identifiers, birth dates, free-text answers, all goal-plan free text) and for tokens.
``test_zz_output_scan`` does the same for what the tool prints and writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from alliance_fhir import log as alog

from .clinickit import copy_clinic, make_api
from .conftest import LOG_CAPTURE
from .phikit import PhiScan

TOKEN = "s3cr3t-t0ken-for-the-log-scan"
_BEARER = re.compile(r"(?i)\bbearer\s+(?!\[redacted\])\S+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


def _demo_run(base_url: str, tmp_path: Path) -> None:
    examples = copy_clinic(tmp_path)
    stream_lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            stream_lines.append(text)

        def flush(self) -> None:
            return

        def isatty(self) -> bool:
            return False

    alog.configure(level="DEBUG", json=True, stream=Sink())  # type: ignore[arg-type]
    alog.register_sensitive(TOKEN)
    try:
        with make_api(base_url, tmp_path / "scan.sqlite3") as api:
            api.seed(examples / "clinic" / "people.json")
            assert api.publish(labels_only=True).ok
            assert api.push_assessments([examples / "clinic" / "assessments"]).ok
            assert api.push_goals([examples / "goals"]).ok
            api.pull_plans("http://example-clinic.org/mrn|MRN-1001")
            api.score_files([examples / "clinic" / "assessments"])
            alog.get_logger("alliance_fhir.test").info("scan.token", detail=f"Bearer {TOKEN}")
    finally:
        alog.configure(level="WARNING")
    assert stream_lines, "the demo run emitted nothing"


def test_no_log_line_of_the_integration_suite_carries_phi_or_tokens(
    fhir_base_url: str, fhir_reset: Callable[[], None], tmp_path: Path
) -> None:
    before = len(LOG_CAPTURE.lines)
    _demo_run(fhir_base_url, tmp_path)
    lines = list(LOG_CAPTURE.lines)
    assert len(lines) > before + 20, "the capture did not see the demo run's log lines"
    assert any('"fhir.request"' in line for line in lines)
    assert any("sync.done" in line for line in lines)

    scan = PhiScan(frozenset({TOKEN}))
    assert {"Okafor", "MRN-1001", "1988-03-14"} <= scan.values  # the PHI list is really loaded
    leaks = [(hit, line[:200]) for line in lines for hit in scan.hits(line)]
    tokens = [line[:200] for line in lines if _BEARER.search(line) or _JWT.search(line)]
    assert not leaks, f"{len(leaks)} PHI hits in {len(lines)} log lines, e.g. {leaks[:3]}"
    assert not tokens, f"tokens in log lines: {tokens[:3]}"
