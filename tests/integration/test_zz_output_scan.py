"""Everything the tool writes or prints is free of patient data, and private at rest.

One clinic's worth of CLI commands against the real server, in-process as a user runs them
(publish, push, pull, monitor, report with PNG, status, doctor, config show, a daemon cycle
over an inbox with a good file and a hostile one named after a person), then the same after a
server that echoes the request (MRN, name, birth date, answers) in a 422's diagnostics. The
scan looks for every PHI value of ``examples/`` (``phikit``) in:

* stdout and stderr of every command, except the stdout of ``pull goals``, which is the plan
  the user asked to see;
* every inbox ``report.json``, the report HTML's title and alt/aria text, the state store's
  dead letters, and the log lines of the commands.

And, under umask 022, every file the tool created is 0600 and every folder 0700.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from alliance_fhir.api import AllianceFhir
from alliance_fhir.cli import main

from .clinickit import copy_clinic, make_api
from .conftest import LOG_CAPTURE
from .phikit import PhiScan

PATIENT = "http://example-clinic.org/mrn|MRN-1001"
ECHOED = "Adaeze Okafor (MRN-1001, born 1988-03-14)"
_ATTRS = re.compile(r'(?:alt|aria-label|title)="([^"]*)"|<title>(.*?)</title>', re.S)


class Echoing(httpx.HTTPTransport):
    """The real server for reads; every write is refused with a 422 whose diagnostics echo
    the request (as some EHRs do): the patient's name, MRN and birth date, and the body."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("GET", "HEAD"):
            return super().handle_request(request)
        body = request.read().decode("utf-8", errors="replace")
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": f"Rejected for {ECHOED}: {body[:4000]}",
                    "details": {"text": f"Patient {ECHOED} has no such encounter"},
                    "expression": ["Bundle.entry[0].resource"],
                }
            ],
        }
        return httpx.Response(422, json=outcome, headers={"content-type": "application/fhir+json"})


class Outputs:
    """The commands run and what each printed."""

    def __init__(self) -> None:
        self.printed: list[tuple[str, str, str]] = []  # (command, stream, text)

    def run(self, *args: str, codes: tuple[int, ...] = (0,)) -> str:
        result = CliRunner().invoke(main, list(args))
        command = " ".join(args[:2])
        self.printed.append((command, "stderr", result.stderr))
        if args[:2] != ("pull", "goals"):
            self.printed.append((command, "stdout", result.stdout))
        assert result.exit_code in codes, (args, result.exit_code, result.stderr[-500:])
        return result.stdout


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _drop(inbox: Path, name: str, text: str) -> None:
    (inbox / name).write_text(text, encoding="utf-8")
    past = os.stat(inbox / name).st_mtime - 600
    os.utime(inbox / name, (past, past))  # settled


def _created(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(folder) / name


def _at_rest_texts(work: Path) -> Iterator[tuple[str, str]]:
    for path in _created(work):
        if path.name.endswith(".report.json"):
            yield str(path.relative_to(work)), path.read_text(encoding="utf-8")
        elif path.suffix == ".html":
            page = path.read_text(encoding="utf-8")
            texts = [a or b for a, b in _ATTRS.findall(page)]
            assert texts, "the report has a title and labelled images"
            yield f"{path.name} title/alt", "\n".join(texts)
    with sqlite3.connect(work / ".alliance-fhir" / "state.sqlite3") as db:
        rows = db.execute("SELECT * FROM dead_letters").fetchall()
    assert rows, "the echoing server left dead letters to scan"
    yield "dead_letters", json.dumps(rows, default=str)


def test_nothing_the_tool_writes_or_prints_carries_phi_and_all_of_it_is_private(
    fhir_base_url: str,
    fhir_reset: Callable[[], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    umask_022: None,
) -> None:
    fhir_reset()
    examples = copy_clinic(tmp_path / "in")
    work = tmp_path / "work"  # the test's; everything inside is the tool's
    work.mkdir(mode=0o700)
    monkeypatch.chdir(work)
    for name in ("ALLIANCE_FHIR_CONFIG", "ALLIANCE_FHIR_AUTH", "ALLIANCE_FHIR_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_URL", fhir_base_url)
    monkeypatch.setenv("ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS", "30")
    with make_api(fhir_base_url, tmp_path / "seed.sqlite3") as api:
        api.seed(examples / "clinic" / "people.json")
    logs_before = len(LOG_CAPTURE.lines)

    out = Outputs()
    out.run("config", "show")
    out.run("doctor")
    out.run("publish", "--labels-only")
    out.run("push", "assessments", str(examples / "clinic" / "assessments"))
    out.run("push", "goals", str(examples / "goals"))
    plan = out.run("pull", "goals", "--patient", PATIENT)
    assert "I want to walk Biscuit every morning again" in plan  # what the user asked for
    out.run("monitor", "--all", codes=(0, 1))
    report = ["report", "--patient", PATIENT, "--out", "reports/mrn-1001.html"]
    if shutil.which("chromium"):
        report += ["--png", "reports/mrn-1001.png"]
    out.run(*report)
    inbox = work / ".alliance-fhir" / "inbox"
    inbox.mkdir(mode=0o700)  # as the operator makes it; the daemon adds processed/, failed/
    good = (examples / "clinic" / "assessments" / "mrn-1002.yaml").read_text()
    _drop(inbox, "mrn-1002-checkins.yaml", good.replace("1002-s", "1002-inbox-s"))
    _drop(inbox, "Okafor_Adaeze_plan.yaml", "key: [Adaeze Okafor, MRN-1001, 1988-03-14]\n")
    daemon = ["daemon", "--once", "--no-metrics", "--no-monitoring", "--settle-seconds", "0"]
    out.run(*daemon, codes=(1,))  # one file went to failed/: not a clean cycle
    assert len(list((inbox / "failed").glob("*.report.json"))) == 1
    assert len(list((inbox / "processed").glob("*.report.json"))) == 1
    out.run("status")

    # A server that echoes the request in its error text: new records, every write refused.
    monkeypatch.setattr(
        AllianceFhir,
        "__init__",
        functools.partialmethod(AllianceFhir.__init__, transport=Echoing()),
    )
    changed = good.replace("1002-s", "1002-echo-s")
    (tmp_path / "echo.yaml").write_text(changed)
    out.run("push", "assessments", str(tmp_path / "echo.yaml"), codes=(1,))
    _drop(inbox, "mrn-1002-echo.yaml", good.replace("1002-s", "1002-echo-inbox-s"))
    out.run(*daemon, codes=(0, 1))
    status = out.run("status")
    assert "dead letters: 0" not in status

    scan = PhiScan()
    assert {"Okafor", "MRN-1001", "1988-03-14"} <= scan.values  # the PHI list is loaded
    assert len(scan.values) > 60
    leaks = [(where, stream, hit) for where, stream, text in out.printed for hit in scan.hits(text)]
    leaks += [
        (where, "file", hit) for where, text in _at_rest_texts(work) for hit in scan.hits(text)
    ]
    lines = LOG_CAPTURE.lines[logs_before:]
    assert lines, "the commands' log lines were captured"
    leaks += [("log", "line", hit) for line in lines for hit in scan.hits(line)]
    assert leaks == []

    wide = [
        f"{p.relative_to(work)} {p.stat().st_mode & 0o777:04o}"
        for p in _created(work)
        if p.stat().st_mode & 0o777 != (0o700 if p.is_dir() else 0o600)
    ]
    assert wide == []
    assert sum(1 for _ in _created(work)) > 10
