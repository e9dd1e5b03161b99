"""``python -m alliance_fhir.daemon``: a bug is one line with a run id and exit 70, as in the
CLI; the debug log has the failure's shape (types, frames), never its text."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from alliance_fhir import log as alog
from alliance_fhir.config import Settings
from alliance_fhir.daemon import __main__ as entry
from alliance_fhir.exit_codes import ExitCode

INTERNAL = re.compile(
    r"alliance-fhir daemon: internal error \(run ([0-9a-f]{12})\); details in the debug log"
)


def _run_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def run(*_: object) -> int:
        raise exc

    monkeypatch.setattr(entry, "run", run)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PATH", str(tmp_path / "state.sqlite3"))
    # load_settings records the TOML path on the class; later tests must not read ours
    monkeypatch.setattr(Settings, "toml_path", Settings.toml_path)
    yield
    # main() pointed structlog at the captured stderr, which pytest closes after the test
    alog.configure(stream=sys.__stderr__)


def test_an_unexpected_exception_is_one_line_and_exit_70(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_raises(monkeypatch, RuntimeError("Okafor Adaeze MRN-1001"))
    code = entry.main(["--once", "--no-metrics"])
    out, err = capsys.readouterr()
    assert code == ExitCode.INTERNAL == 70
    assert out == ""
    assert INTERNAL.fullmatch(err.rstrip("\n"))
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert "MRN-1001" not in err


def test_the_debug_log_has_the_shape_but_not_the_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ALLIANCE_FHIR_LOG_JSON", "true")
    try:
        {"mrn": "MRN-1001"}["Okafor Adaeze"]
    except KeyError as inner:
        cause = inner
    wrapped = ValueError("MRN-1001 again")
    wrapped.__cause__ = cause
    _run_raises(monkeypatch, wrapped)
    code = entry.main(["--once", "--no-metrics"])
    out, err = capsys.readouterr()
    assert code == 70
    assert out == ""
    assert "MRN-1001" not in err
    assert "Okafor" not in err
    assert "Traceback" not in err
    lines = err.splitlines()
    match = INTERNAL.fullmatch(lines[-1])
    assert match
    [event] = [json.loads(x) for x in lines[:-1] if '"daemon.internal_error"' in x]
    assert event["level"] == "debug"
    assert event["run_id"] == match.group(1)
    assert event["error_type"] == "builtins.ValueError"
    assert event["caused_by"] == ["builtins.KeyError"]
    assert event["frames"][0].startswith("alliance_fhir.daemon.__main__:")
    assert event["frames"][-1].startswith(f"{__name__}:")


def test_a_config_error_is_still_exit_2_not_internal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("server_url = [\n")
    assert entry.main(["--config", str(bad), "--once"]) == ExitCode.CONFIG
    assert "internal error" not in capsys.readouterr().err
