"""Patient data at rest and in the log: goal-plan free text is masked wherever it appears;
reports are 0600 in 0700 folders whatever the umask; ``doctor`` warns about wider files;
``status`` shows runs with bad input as failed input with the count of problems."""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.app.reports import Reports, render_png
from alliance_fhir.cli import main
from alliance_fhir.config import Settings
from alliance_fhir.goals import load_plans
from alliance_fhir.sync.state import StateStore

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
#: Plan-file keys whose values are the people's own words (docs/goals.md).
FREE_TEXT_KEYS = {"title", "client_words", "clinician_framing", "text", "detail", "note"}
FREE_TEXT_LISTS = {"strengths", "resources"}
CSV_FREE_TEXT = ("plan_title", "client_words", "clinician_framing", "addresses", "note")


def _yaml_free_text(node: Any, parent: str = "") -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "measure":
                continue  # what is counted ("Morning walks per week"), not the client's words
            if key in FREE_TEXT_KEYS and isinstance(value, str):
                found.add(value)
            elif key in FREE_TEXT_LISTS and isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
            else:
                found |= _yaml_free_text(value, key)
    elif isinstance(node, list):
        for value in node:
            found |= _yaml_free_text(value, parent)
    return found


def _example_free_text() -> set[str]:
    found: set[str] = set()
    for path in sorted((EXAMPLES / "goals").glob("*.yaml")):
        found |= _yaml_free_text(yaml.safe_load(path.read_text(encoding="utf-8")))
    with (EXAMPLES / "goals" / "plans-mrn-1004.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            found.update(row[k] for k in CSV_FREE_TEXT if row[k])
            for key in FREE_TEXT_LISTS:
                found.update(v for v in row[key].split(";") if v)
    return found


def test_every_free_text_value_of_the_example_plans_is_masked_once_read() -> None:
    values = _example_free_text()
    assert len(values) >= 37  # the list is really loaded
    for path in sorted((EXAMPLES / "goals").iterdir()):
        plans, problems = load_plans(path)
        assert plans
        assert not problems
    unmasked = [v for v in values if alog.REDACTED not in alog.scrub(f"goal: {v}.")]
    assert unmasked == []


# -- files at rest ----------------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _reports() -> Reports:
    reports = Reports.__new__(Reports)  # no server: the page itself is not the point here
    reports.report_html = lambda patient, label=None: "<html><title>Client 1</title></html>"  # type: ignore[method-assign]
    return reports


def test_the_report_html_is_0600_in_new_0700_folders(tmp_path: Path, umask_022: None) -> None:
    out = tmp_path / "reports" / "2024" / "client.html"
    assert _reports().write_report("Patient/1", out) == [out]
    assert out.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "reports").stat().st_mode & 0o777 == 0o700
    assert out.parent.stat().st_mode & 0o777 == 0o700


def test_rewriting_a_wide_report_makes_it_private(tmp_path: Path, umask_022: None) -> None:
    out = tmp_path / "client.html"
    out.write_text("old")
    out.chmod(0o644)
    _reports().write_report("Patient/1", out)
    assert out.stat().st_mode & 0o777 == 0o600
    assert out.read_text() == "<html><title>Client 1</title></html>"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_report_png_is_0600_in_a_new_0700_folder(tmp_path: Path, umask_022: None) -> None:
    page = tmp_path / "client.html"
    page.write_text("<html><body><h1>Alliance</h1></body></html>")
    png = render_png(page, tmp_path / "shots" / "client.png", window_size=(400, 300))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_mode & 0o777 == 0o600
    assert png.parent.stat().st_mode & 0o777 == 0o700


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    for name in ("ALLIANCE_FHIR_CONFIG", "ALLIANCE_FHIR_AUTH", "ALLIANCE_FHIR_SERVER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALLIANCE_FHIR_RETRY_ATTEMPTS", "1")  # doctor's server is not there
    return CliRunner()


def test_doctor_warns_about_wide_state_inbox_and_report_files(
    cli: CliRunner, tmp_path: Path, umask_022: None
) -> None:
    state = tmp_path / ".alliance-fhir"
    (state / "inbox" / "failed").mkdir(parents=True)  # 0755 under umask 022
    (state / "state.sqlite3").write_text("")  # 0644
    (state / "inbox" / "failed" / "a.yaml.report.json").write_text("{}")
    Path("alliance-report.html").write_text("")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    result = cli.invoke(main, ["--server-url", "http://127.0.0.1:9/fhir", "doctor"])
    assert result.exit_code == 4  # the server is unreachable: unchanged
    warned = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    prefix = "warning: readable by others (patient data): "
    assert sorted(warned) == sorted(
        f"{prefix}{path}"
        for path in (
            ".alliance-fhir: mode 0755, want 0700",
            ".alliance-fhir/inbox: mode 0755, want 0700",
            ".alliance-fhir/inbox/failed: mode 0755, want 0700",
            ".alliance-fhir/inbox/failed/a.yaml.report.json: mode 0644, want 0600",
            ".alliance-fhir/state.sqlite3: mode 0644, want 0600",
            "alliance-report.html: mode 0644, want 0600",
        )
    )


def test_doctor_is_quiet_about_private_files(
    cli: CliRunner, tmp_path: Path, umask_022: None
) -> None:
    with StateStore(tmp_path / ".alliance-fhir" / "state.sqlite3") as store:
        store.start_run("r1", "sync")
    result = cli.invoke(main, ["--server-url", "http://127.0.0.1:9/fhir", "doctor"])
    assert result.exit_code == 4
    assert "warning:" not in result.stderr


# -- status ------------------------------------------------------------------------------------


def test_a_run_with_bad_input_shows_as_failed_input_with_its_problem_count(
    cli: CliRunner, tmp_path: Path
) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
        store.start_run("aaaaaaaaaaaa", "push assessments")
        store.finish_run("aaaaaaaaaaaa", "ok", {})
        store.mark_failed_input("aaaaaaaaaaaa", 3)
        store.start_run("bbbbbbbbbbbb", "push assessments")
        store.finish_run("bbbbbbbbbbbb", "ok", {"created": 2})
    result = cli.invoke(main, ["--state", "s.sqlite3", "status"])
    assert result.exit_code == 0
    rows = {ln.split()[1]: ln for ln in result.stdout.splitlines() if "aaaa" in ln or "bbbb" in ln}
    assert "failed input" in rows["aaaaaaaaaaaa"]
    assert rows["aaaaaaaaaaaa"].rstrip(" │|").endswith("problems 3")
    assert " ok " in rows["bbbbbbbbbbbb"]


def test_a_push_that_leaves_records_out_is_recorded_as_failed_input(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("assessments:\n  - {instrument: nope, patient: x}\n")
    api = AllianceFhir(Settings(state_path=tmp_path / "s.sqlite3"))

    class NoServer:
        def run_windows(self, windows: Any, *, command: str) -> Any:
            from alliance_fhir.sync.engine import SyncResult

            for _ in windows:
                pass
            result = SyncResult(run_id="cccccccccccc")
            api.store.start_run(result.run_id, command)
            api.store.finish_run(result.run_id, "ok", {})
            return result

    api.engine = lambda **_: NoServer()  # type: ignore[assignment,method-assign,return-value]
    report = api.push_assessments([bad])
    assert report.problems
    (run,) = api.store.recent_runs(1)
    assert run.outcome == "failed input"
    assert run.counts == {"problems": len(report.problems)}
    api.close()
