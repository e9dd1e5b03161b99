"""The state store at rest: private files, no server-echoed PHI in dead letters, and runs
killed mid-way shown as interrupted rather than running forever."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from statekit import Target

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


def test_dead_letters_keep_no_server_text(state_target: Target) -> None:
    error = FhirError("POST /Observation -> 422 Unprocessable Entity", status=422, outcome=ECHO)
    with state_target.open() as store:
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
    if state_target.path is not None:  # every byte of the file and its journal
        folder = state_target.path.parent
        raw = b"".join(p.read_bytes() for p in folder.iterdir() if p.name.startswith("state."))
    else:  # every stored value
        raw = repr(state_target.rows("SELECT * FROM dead_letters")).encode()
    assert b"MSG_BAD" in raw
    for value in PHI:
        assert value.encode() not in raw


def test_state_files_are_private_under_umask_022(tmp_path: Path) -> None:
    """SQLite only: a PostgreSQL store keeps no file of ours."""
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


def _killed_run(target: Target) -> None:
    code = (
        "import os, signal, sys\n"
        "from alliance_fhir.sync.state import open_store\n"
        "s = open_store(sys.argv[1], password=os.environ.get('ALLIANCE_FHIR_STATE_PASSWORD'))\n"
        "s.start_run('killed', 'sync')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, target.url], check=False, timeout=60, env=target.env()
    )
    assert done.returncode == -9


def test_a_run_killed_mid_way_is_interrupted_not_running(state_target: Target) -> None:
    _killed_run(state_target)
    with state_target.open() as store:
        [run] = store.recent_runs()
        assert run.outcome == INTERRUPTED  # what `status` shows
        store.start_run("next", "sync")  # the next run marks it in the store
    killed = "SELECT outcome FROM runs WHERE run_id='killed'"
    assert state_target.rows(killed) == [(INTERRUPTED,)]


def test_a_run_in_progress_is_still_running(state_target: Target) -> None:
    with state_target.open() as store:
        store.start_run("live", "sync")
        assert store.mark_interrupted() == []
        [run] = store.recent_runs()
    assert run.outcome is None
