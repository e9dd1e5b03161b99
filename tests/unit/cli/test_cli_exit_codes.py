"""Exit codes a scheduler or integration job can act on, and no traceback ever.

Each of our exception classes is raised from inside a real command (``status``, with the
API call replaced) and must give its documented code and one ``error:`` line; anything else
is an internal error: exit 70, one line naming a run id, details only in the debug log.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from clikit import Run

from alliance_fhir.api import AllianceFhir
from alliance_fhir.daemon import InstanceLock, lock_path_for
from alliance_fhir.exceptions import (
    AlreadyRunningError,
    ConfigError,
    ConflictError,
    FatalError,
    FhirError,
    InvalidInputError,
    LicensedWordingRequired,
    Problem,
    RenderError,
    RetriableError,
    ScoringError,
    ServerRejectedError,
    StateError,
    UnknownInstrumentError,
    UnresolvedPerson,
)
from alliance_fhir.exit_codes import ExitCode

REPO = Path(__file__).resolve().parents[3]
INTERNAL = re.compile(
    r"alliance-fhir: internal error \(run ([0-9a-f]{12})\); details in the debug log"
)

MAPPED = [
    pytest.param(ConfigError("server_url is not set"), 2, id="ConfigError"),
    pytest.param(LicensedWordingRequired("srs: licensed; pass --overlay"), 2, id="Licensed"),
    pytest.param(UnknownInstrumentError("unknown instrument 'x'"), 2, id="UnknownInstrument"),
    pytest.param(AlreadyRunningError(Path("s.lock"), 4242), 3, id="AlreadyRunning"),
    pytest.param(RetriableError("GET /fhir/metadata: ConnectError"), 4, id="Retriable-connect"),
    pytest.param(RetriableError("GET /fhir/Goal -> 503", status=503), 4, id="Retriable-503"),
    pytest.param(FatalError("GET /fhir/Goal -> 401 Unauthorized", status=401), 4, id="Fatal-401"),
    pytest.param(FatalError("GET /fhir/Goal -> 403 Forbidden", status=403), 4, id="Fatal-403"),
    pytest.param(FatalError("GET /fhir/Goal -> 404 Not Found", status=404), 1, id="Fatal-404"),
    pytest.param(FatalError("GET /fhir/metadata: TLS certificate failed"), 1, id="Fatal-TLS"),
    pytest.param(FhirError("the server said no"), 1, id="FhirError"),
    pytest.param(ConflictError("PUT /fhir/Goal/1 -> 412", status=412), 1, id="Conflict"),
    pytest.param(ServerRejectedError("POST /fhir -> 422", status=422), 1, id="Rejected"),
    pytest.param(UnresolvedPerson(SimpleNamespace(resource_type="Patient")), 1, id="Unresolved"),
    pytest.param(RenderError("chromium wrote no picture"), 1, id="RenderError"),
    pytest.param(StateError("state store is corrupt"), 1, id="StateError"),
]


def _status_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def status(self: AllianceFhir, *, runs: int = 10) -> None:
        raise exc

    monkeypatch.setattr(AllianceFhir, "status", status)


@pytest.mark.parametrize(("exc", "code"), MAPPED)
def test_each_error_class_gives_its_exit_code_and_one_line(
    run: Run, monkeypatch: pytest.MonkeyPatch, exc: Exception, code: int
) -> None:
    _status_raises(monkeypatch, exc)
    result = run("--state", "s.sqlite3", "status")
    assert result.code == code
    assert result.out == ""
    assert result.err == f"error: {exc}\n"


@pytest.mark.parametrize("kind", [InvalidInputError, ScoringError])
def test_input_problems_exit_1_with_one_line_per_problem(
    run: Run, monkeypatch: pytest.MonkeyPatch, kind: type[InvalidInputError]
) -> None:
    _status_raises(
        monkeypatch,
        kind([Problem("a.yaml", "q1", "above 10", line=3), Problem("b.json", "", "not JSON")]),
    )
    result = run("--state", "s.sqlite3", "status")
    assert result.code == 1
    assert result.err == "error: a.yaml:3 [q1]: above 10\nerror: b.json: not JSON\n"


def test_an_unexpected_exception_is_one_line_exit_70_and_no_traceback(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status_raises(monkeypatch, RuntimeError("secret PHI"))
    result = run("--state", "s.sqlite3", "status")
    assert result.code == ExitCode.INTERNAL == 70
    assert result.out == ""
    assert INTERNAL.fullmatch(result.err.rstrip("\n"))
    assert result.err.count("\n") == 1
    assert "Traceback" not in result.err
    assert "secret PHI" not in result.err


def test_the_debug_log_has_the_shape_of_the_failure_but_not_its_text(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ALLIANCE_FHIR_LOG_JSON", "true")
    try:
        {"mrn": "MRN-1001"}["secret PHI"]
    except KeyError as inner:
        cause = inner
    wrapped = ValueError("secret PHI again")
    wrapped.__cause__ = cause
    _status_raises(monkeypatch, wrapped)
    result = run("--verbose", "--state", "s.sqlite3", "status")
    assert result.code == 70
    assert "secret PHI" not in result.err
    assert "MRN-1001" not in result.err
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    match = INTERNAL.fullmatch(lines[-1])
    assert match
    [event] = [json.loads(x) for x in lines[:-1] if '"cli.internal_error"' in x]
    assert event["level"] == "debug"
    assert event["run_id"] == match.group(1)
    assert event["error_type"] == "builtins.ValueError"
    assert event["caused_by"] == ["builtins.KeyError"]
    assert any(frame.startswith("alliance_fhir.cli.reads:") for frame in event["frames"])
    assert event["frames"][-1].startswith(f"{__name__}:")


@pytest.mark.parametrize(
    "args",
    [
        ["nonsense"],
        ["score"],
        ["status", "--no-such-option"],
        ["status", "--runs", "many"],
        ["instruments", "render"],
    ],
    ids=["unknown-command", "missing-argument", "unknown-option", "bad-value", "missing-id"],
)
def test_usage_errors_exit_2(run: Run, args: list[str]) -> None:
    result = run(*args)
    assert result.code == 2
    assert result.err.splitlines()[-1].startswith("Error: ")


def test_a_missing_config_file_exits_2(run: Run, tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "nope.toml"), "config", "show")
    assert result.code == 2
    assert result.out == ""
    assert len(result.err.splitlines()) == 1
    assert result.err.startswith("error: ")
    assert "nope.toml" in result.err


def test_an_unreachable_server_exits_4(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_RETRY_ATTEMPTS", "1")
    nowhere = ["--server-url", "http://127.0.0.1:9/fhir", "--state", "s.sqlite3"]
    doctor = run(*nowhere, "doctor")
    assert doctor.code == 4
    assert doctor.out == "server: http://127.0.0.1:9/fhir\n"
    assert doctor.err.splitlines()[-1].startswith(
        "error: cannot use the server: GET /fhir/metadata: ConnectError"
    )
    push = run(*nowhere, "push", "goals", str(REPO / "examples" / "goals"))
    assert push.code == 4
    assert push.err.splitlines()[-1].startswith("error: GET /fhir/")


def test_the_daemon_exits_3_when_another_holds_the_state_store(run: Run, tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite3"
    other = InstanceLock(lock_path_for(state))
    other.acquire()
    try:
        result = run("--state", str(state), "daemon", "--once", "--no-metrics")
    finally:
        other.release()
    assert result.code == 3
    assert "is already running on this state store" in result.err


def test_python_dash_m_runs_the_same_command_with_the_same_codes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "alliance_fhir.cli", "instruments", "show", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: unknown instrument 'nope'")
    assert proc.stderr.count("\n") == 1


def test_the_readme_table_lists_exactly_the_exit_codes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = [int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)]
    assert documented == [int(code) for code in ExitCode]
