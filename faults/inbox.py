"""Inbox scenarios: a real ``alliance-fhir daemon`` process against the real server.

Each scenario drops files into a fresh inbox, runs the daemon (``--once``, or looping while a
writer works) and checks what an operator relies on:

* the good files' records are on the server exactly once, the state store agrees
  (:func:`faults.invariants.check`), and the good files are in ``processed/``;
* the bad file is in ``failed/`` beside a ``.report.json`` giving a reason, and none of its
  records are on the server (unless the scenario resubmits it);
* no PHI of ``examples/`` (``tests/integration/phikit.py``) in any ``report.json``, in the
  daemon's stdout/stderr (its log, at DEBUG) or in the state store's dead letters;
* the daemon exits 0, or 1 ("some records failed", ``--once``), never anything else.

Every daemon run has a time limit; a scenario that hits it fails instead of hanging.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.phikit import PhiScan

from alliance_fhir.adapters.record import Desired
from alliance_fhir.api import AllianceFhir
from faults.invariants import check
from faults.scenarios import ASSESSMENTS, BUNDLE_SIZE, Harness, Outcome, Scenario

#: The daemon's settle time in these scenarios (seconds an inbox file must rest untouched).
SETTLE = 1.0
#: Longest a ``--once`` daemon run may take before the scenario fails.
ONCE_LIMIT = 240.0
#: Daemon exit codes that are fine after a cycle with a bad file: 0, or 1 (some failed).
FINE_EXITS = (0, 1)
#: A YAML file no importer can read: a complex (sequence) key and an impossible date key.
HOSTILE_YAML = """\
defaults:
  patient: {system: http://example-clinic.org/mrn, value: MRN-1004}
? [a, b]
: complex key
2024-02-30: impossible date
assessments: []
"""


#: What the daemon publishes each cycle into the same state store (not inbox records).
PUBLISHED = frozenset({"codesystem", "questionnaire"})


@functools.cache
def phi_scan() -> PhiScan:
    """One scan per process (its PHI list is read from examples/)."""
    return PhiScan()


@dataclass
class InboxCase:
    """One scenario's inbox, state store and what the daemon printed."""

    work: Path
    printed: list[str] = field(default_factory=list)

    @property
    def inbox(self) -> Path:
        return self.work / "inbox"

    @property
    def state(self) -> Path:
        return self.work / "state" / "state.sqlite3"

    def drop(self, name: str, text: str) -> Path:
        """Write under a temporary name, then rename: the way a well-behaved writer does."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        tmp = self.inbox / f".{len(name)}.part"
        tmp.write_text(text, encoding="utf-8")
        target = self.inbox / name
        tmp.rename(target)
        past = time.time() - 10 * SETTLE  # settled already: --once takes it at once
        os.utime(target, (past, past))
        return target

    def archived(self, folder: str) -> list[Path]:
        base = self.inbox / folder
        if not base.is_dir():
            return []
        return sorted(p for p in base.iterdir() if not p.name.endswith(".report.json"))

    def reports(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        for folder in ("processed", "failed"):
            base = self.inbox / folder
            for path in sorted(base.glob("*.report.json")) if base.is_dir() else []:
                yield path, json.loads(path.read_text(encoding="utf-8"))


def _daemon(h: Harness, case: InboxCase, server_url: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
    env.update(
        ALLIANCE_FHIR_SERVER_URL=server_url,
        ALLIANCE_FHIR_STATE_PATH=str(case.state),
        ALLIANCE_FHIR_INBOX_DIR=str(case.inbox),
        ALLIANCE_FHIR_INTERVAL_SECONDS="1",
        ALLIANCE_FHIR_BUNDLE_SIZE=str(BUNDLE_SIZE),
        ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS="30",
        ALLIANCE_FHIR_LOG_LEVEL="DEBUG",
        ALLIANCE_FHIR_LOG_JSON="true",
    )
    exe = Path(sys.executable).with_name("alliance-fhir")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "alliance_fhir.cli"]
    argv += ["daemon", "--labels-only", "--no-metrics", "--no-monitoring"]
    argv += ["--settle-seconds", str(SETTLE), "--backoff-max", "2", *extra]
    return subprocess.Popen(
        argv,
        cwd=str(case.work),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(h: Harness, case: InboxCase, proc: subprocess.Popen[str], limit: float) -> int:
    """Wait for the daemon (SIGKILL at ``limit``); keep what it printed for the PHI scan."""
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
    case.printed += [out, err]
    if h.log_sink is not None:
        h.log_sink(err)
    return proc.returncode


def _once(h: Harness, case: InboxCase, server_url: str, outcome: Outcome) -> None:
    code = _collect(h, case, _daemon(h, case, server_url, "--once"), ONCE_LIMIT)
    outcome.notes.append(f"daemon --once exit {code}")
    if code not in FINE_EXITS:
        outcome.error = f"daemon --once exited {code}"


def _records(h: Harness, paths: list[Path]) -> list[Desired]:
    with AllianceFhir(h.settings(h.base_url, h.work / "plan.sqlite3")) as af:
        records = af.assessment_records(paths)
    if records.problems or not records.desired:
        raise RuntimeError(f"a good file has problems: {records.problems[:3]}")
    return records.desired


def _fail(outcome: Outcome, why: str) -> None:
    outcome.error = outcome.error or why


def _verify(
    h: Harness,
    case: InboxCase,
    outcome: Outcome,
    *,
    good: list[Path],
    processed: int,
    failed: int,
    reason_has: str,
) -> None:
    """The invariants every inbox scenario shares (see the module docstring)."""
    outcome.check = check(
        h.base_url, _records(h, good), case.state, h.namespace, also_synced=PUBLISHED
    )
    done, bad = case.archived("processed"), case.archived("failed")
    outcome.notes.append(f"processed {len(done)}, failed {len(bad)}")
    if len(done) != processed or len(bad) != failed:
        _fail(outcome, f"want {processed} processed / {failed} failed")
    reasons = [
        str(problem.get("reason", "")) if isinstance(problem, dict) else str(problem)
        for path, body in case.reports()
        if path.parent.name == "failed"
        for problem in [*(body.get("problems") or []), *(body.get("failures") or [])]
    ]
    if failed and not any(r and reason_has in r for r in reasons):
        _fail(outcome, f"no failed/ report says {reason_has!r}: {reasons[:2]}")
    elif reasons:
        outcome.notes.append(f"reason: {reasons[0][:60]}")
    _scan_phi(case, outcome)


def _scan_phi(case: InboxCase, outcome: Outcome) -> None:
    texts = [("daemon output", "\n".join(case.printed))]
    texts += [(path.name, path.read_text(encoding="utf-8")) for path, _ in case.reports()]
    letters = 0
    if case.state.exists():
        with sqlite3.connect(case.state) as db:
            rows = db.execute("SELECT * FROM dead_letters").fetchall()
        letters = len(rows)
        texts.append(("dead letters", json.dumps(rows, default=str)))
    hits = sorted({hit for _, text in texts for hit in phi_scan().hits(text)})
    outcome.notes.append(f"PHI scanned: {len(texts)} texts, {letters} dead letters")
    if hits:
        where = sorted({name for name, text in texts if phi_scan().hits(text)})
        _fail(outcome, f"PHI in {', '.join(where)[:80]} ({len(hits)} values)")


def _case(h: Harness, name: str) -> InboxCase:
    work = h.work / f"inbox-{name}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return InboxCase(work)


# -- scenarios ------------------------------------------------------------------------------


def hostile_file(h: Harness, outcome: Outcome, _: Path) -> None:
    """A YAML file with ``? [a, b]`` and ``2024-02-30:`` keys between two good files."""
    case = _case(h, "hostile")
    case.drop("a-checkins.yaml", (ASSESSMENTS / "mrn-1001.yaml").read_text())
    case.drop("m-hostile.yaml", HOSTILE_YAML)
    case.drop("z-checkins.yaml", (ASSESSMENTS / "mrn-1002.yaml").read_text())
    originals = [ASSESSMENTS / "mrn-1001.yaml", ASSESSMENTS / "mrn-1002.yaml"]
    _once(h, case, h.base_url, outcome)
    _verify(h, case, outcome, good=originals, processed=2, failed=1, reason_has="")


def name_collision(h: Harness, outcome: Outcome, _: Path) -> None:
    """A 245-character file name that already exists in ``processed/`` (with its report)."""
    case = _case(h, "collision")
    name = "Okafor_Adaeze_" + "x" * (245 - len("Okafor_Adaeze_") - len(".yaml")) + ".yaml"
    assert len(name) == 245
    earlier = case.inbox / "processed"
    earlier.mkdir(parents=True)
    (earlier / name).write_text("# archived by an earlier cycle\n")
    case.drop(name, (ASSESSMENTS / "mrn-1001.yaml").read_text())
    _once(h, case, h.base_url, outcome)
    archived = case.archived("processed")
    longest = max((len(p.name.encode()) for p in archived), default=0)
    outcome.notes.append(f"longest archived name {longest} bytes")
    if (case.inbox / name).exists():
        _fail(outcome, "the file is still in the inbox")
    _verify(
        h, case, outcome, good=[ASSESSMENTS / "mrn-1001.yaml"], processed=2, failed=0, reason_has=""
    )


def hard_link(h: Harness, outcome: Outcome, _: Path) -> None:
    """A hard link (and a symlink) to files outside the inbox, beside a good file."""
    case = _case(h, "link")
    outside = case.work / "elsewhere"
    outside.mkdir()
    secret = outside / "mrn-1003.yaml"
    secret.write_text((ASSESSMENTS / "mrn-1003.yaml").read_text())
    other = outside / "mrn-1004.yaml"
    other.write_text((ASSESSMENTS / "mrn-1004.yaml").read_text())
    case.drop("good.yaml", (ASSESSMENTS / "mrn-1001.yaml").read_text())
    os.link(secret, case.inbox / "linked.yaml")
    (case.inbox / "symlinked.yaml").symlink_to(other)
    past = time.time() - 10 * SETTLE
    os.utime(secret, (past, past))
    before = secret.read_bytes(), other.read_bytes()
    _once(h, case, h.base_url, outcome)
    if (secret.read_bytes(), other.read_bytes()) != before:
        _fail(outcome, "a file outside the inbox changed")
    _verify(
        h,
        case,
        outcome,
        good=[ASSESSMENTS / "mrn-1001.yaml"],
        processed=1,
        failed=2,
        reason_has="link",
    )


def phi_echo(h: Harness, outcome: Outcome, _: Path) -> None:
    """Every write of one file is refused with a 422 whose diagnostics echo the request (and
    a patient's name, MRN and birth date); the file beside it goes through."""
    case = _case(h, "echo")
    case.drop("a-good.yaml", (ASSESSMENTS / "mrn-1001.yaml").read_text())
    case.drop("b-refused.yaml", (ASSESSMENTS / "mrn-1002.yaml").read_text())
    h.shim.load([])
    h.shim.echo_when = b"1002-s"  # every record key of mrn-1002.yaml
    h.shim.echoed = 0
    try:
        _once(h, case, h.shim.url(), outcome)
    finally:
        h.shim.echo_when = None
    outcome.under_fault = f"{h.shim.echoed} writes refused with an echoing 422"
    if not h.shim.echoed:
        _fail(outcome, "the shim echoed nothing")
    _verify(
        h,
        case,
        outcome,
        good=[ASSESSMENTS / "mrn-1001.yaml"],
        processed=1,
        failed=1,
        reason_has="",
    )


def paused_writer(h: Harness, outcome: Outcome, _: Path) -> None:
    """A writer writes half a file under its final name, pauses longer than the settle time
    (the daemon takes the half), and appends the rest while the daemon pushes it (through a
    slow link). Nothing may be lost silently: the file ends in ``failed/`` saying it changed,
    or in ``processed/`` complete. Resubmitted whole, every record lands exactly once."""
    case = _case(h, "writer")
    full = (ASSESSMENTS / "mrn-1003.yaml").read_text()
    cut = full.index("\n  - key:", len(full) // 2) + 1  # a record boundary: valid YAML
    case.inbox.mkdir(parents=True)
    target = case.inbox / "checkins.yaml"
    with h.toxics(("lag", "latency", {"latency": 300})):
        daemon = _daemon(h, case, h.proxy.url())
        with target.open("w", encoding="utf-8") as writer:
            writer.write(full[:cut])
            writer.flush()
            started = time.monotonic()
            landed = h.wait_for(lambda: h.count("QuestionnaireResponse") >= 1, 90)
            paused = time.monotonic() - started
            writer.write(full[cut:])
            writer.flush()
        outcome.under_fault = f"writer paused {paused:.1f}s (settle {SETTLE:.0f}s)"
        if not landed:
            _fail(outcome, "the daemon never took the half-written file")
        archived = h.wait_for(lambda: not target.exists(), 120)
        h.wait_for(lambda: len(list(case.reports())) >= 1, 30)
    daemon.send_signal(signal.SIGTERM)
    code = _collect(h, case, daemon, 60)
    outcome.notes.append(f"daemon exit {code}")
    if not archived:
        _fail(outcome, "the file was never archived")
    failed = case.archived("failed")
    processed = case.archived("processed")
    if processed and processed[0].read_text() != full:
        _fail(outcome, "processed/ holds a copy that is not the whole file: rows lost silently")
    if failed:
        # the operator's move: resubmit the complete file
        outcome.notes.append("quarantined; resubmitted whole")
        case.drop("checkins-again.yaml", failed[0].read_text())
        if failed[0].read_text() != full:
            _fail(outcome, "failed/ holds less than the writer wrote")
        _once(h, case, h.base_url, outcome)
    _verify(
        h,
        case,
        outcome,
        good=[ASSESSMENTS / "mrn-1003.yaml"],
        processed=1,
        failed=len(failed),
        reason_has="changed",
    )


#: name -> (fault description, scenario); run by ``python -m faults.run`` after the others.
INBOX: dict[str, tuple[str, Scenario]] = {
    "inbox-hostile": ("daemon: YAML with `? [a, b]` and `2024-02-30:` keys beside 2 good files",
                      hostile_file),
    "inbox-collision": ("daemon: 245-char name already in processed/", name_collision),
    "inbox-writer": ("daemon: writer pauses mid-file past the settle time, resumes mid-push",
                     paused_writer),
    "inbox-link": ("daemon: hard link and symlink to files outside the inbox", hard_link),
    "inbox-phi-echo": ("daemon via shim: 422 echoing the request + name/MRN/birth date",
                       phi_echo),
}  # fmt: skip
