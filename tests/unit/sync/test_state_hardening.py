"""The state store at rest: private files, no server-echoed PHI in dead letters, and runs
killed mid-way shown as interrupted rather than running forever."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from alliance_fhir.exceptions import FhirError, outcome_summary
from alliance_fhir.sync.state import INTERRUPTED, StateStore

ECHO = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "invalid",
            "diagnostics": "Patient MRN-4242 Jane Roe 1980-02-03 said 'I feel unheard'",
            "details": {
                "text": "Jane Roe",
                "coding": [{"system": "http://x", "code": "MSG_BAD", "display": "Jane"}],
            },
            "expression": ["Observation.subject"],
        }
    ],
}
PHI = ("MRN-4242", "Jane Roe", "1980-02-03", "unheard", "Jane")


def test_outcome_summary_without_text_keeps_severity_code_and_expression() -> None:
    assert outcome_summary(ECHO, redact_text=True) == "error: invalid (Observation.subject)"
    assert "Jane Roe" in outcome_summary(ECHO)  # the unredacted form still exists
    error = FhirError("POST /Observation -> 422", outcome=ECHO)
    assert str(error) == "POST /Observation -> 422: error: invalid (Observation.subject)"
    assert error.server_text() == [ECHO["issue"][0]["diagnostics"]]


def test_dead_letters_keep_no_server_text(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    error = FhirError("POST /Observation -> 422 Unprocessable Entity", status=422, outcome=ECHO)
    with StateStore(path) as store:
        store.dead_letter(
            run_id="r1",
            kind="assessment",
            key="k1",
            resource_type="Observation",
            reason=str(error),
            http_status=422,
            outcome=error.outcome,
        )
        [letter] = store.open_dead_letters()
    assert letter.reason == (
        "POST /Observation -> 422 Unprocessable Entity: error: invalid (Observation.subject)"
    )
    assert letter.outcome == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "expression": ["Observation.subject"],
                "details": {"coding": [{"system": "http://x", "code": "MSG_BAD"}]},
            }
        ],
    }
    raw = path.read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("state.sqlite3-")
    )
    for value in PHI:
        assert value.encode() not in raw


def test_state_files_are_private_under_umask_022(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "deep" / "state" / "state.sqlite3"
        with StateStore(path) as store:
            store.start_run("r1", "sync")
            files = sorted(p.name for p in path.parent.iterdir())
            modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    finally:
        os.umask(old)
    assert files == ["state.sqlite3", "state.sqlite3-shm", "state.sqlite3-wal"]
    assert set(modes.values()) == {0o600}
    assert (tmp_path / "deep").stat().st_mode & 0o777 == 0o700
    assert path.parent.stat().st_mode & 0o777 == 0o700


def _killed_run(path: Path) -> None:
    code = (
        "import os, signal, sys\n"
        "from alliance_fhir.sync.state import StateStore\n"
        "s = StateStore(sys.argv[1])\n"
        "s.start_run('killed', 'sync')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], check=False, timeout=60)
    assert done.returncode == -9


def test_a_run_killed_mid_way_is_interrupted_not_running(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    _killed_run(path)
    with StateStore(path) as store:
        [run] = store.recent_runs()
        assert run.outcome == INTERRUPTED  # what `status` shows
        store.start_run("next", "sync")  # the next run marks it in the store
    db = sqlite3.connect(path)
    assert db.execute("SELECT outcome FROM runs WHERE run_id='killed'").fetchone() == (INTERRUPTED,)
    db.close()


def test_a_run_in_progress_is_still_running(tmp_path: Path) -> None:
    with StateStore(tmp_path / "state.sqlite3") as store:
        store.start_run("live", "sync")
        assert store.mark_interrupted() == []
        [run] = store.recent_runs()
    assert run.outcome is None
