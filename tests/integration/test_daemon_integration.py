"""The daemon as users run it (``python -m alliance_fhir.daemon``) against real HAPI servers.

Each test gets its own identifier namespace and canonical base, so counting "our" resources
on the shared test server sees only what this test wrote (no expunge needed, none done:
other suites may be using the server at the same time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

from .clinickit import PHI, copy_clinic, make_api
from .filedbkit import FileDbServer

REPO = Path(__file__).resolve().parents[2]
INTERVAL = "0.5"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


class Clinic:
    """One test's private namespace, clinic copy, inbox and state store."""

    def __init__(self, tmp: Path, base_url: str) -> None:
        self.tmp = tmp
        self.base_url = base_url
        self.examples = copy_clinic(tmp)
        tag = uuid.uuid4().hex[:10]
        self.namespace = f"http://daemon-test.example.org/{tag}/identifier"
        self.canonical = f"http://daemon-test.example.org/{tag}"
        self.inbox = tmp / "inbox"
        self.state = tmp / "state" / "state.sqlite3"
        self.inputs = sorted((self.examples / "clinic" / "assessments").iterdir()) + sorted(
            (self.examples / "goals").iterdir()
        )

    def settings(self) -> Settings:
        return Settings(
            server_url=self.base_url,
            state_path=self.tmp / "expect.sqlite3",
            identifier_namespace=self.namespace,
            canonical_base=self.canonical,
        )

    def seed(self) -> None:
        with make_api(self.base_url, self.tmp / "seed.sqlite3") as api:
            api.seed(self.examples / "clinic" / "people.json")

    def drop(self, files: list[Path]) -> None:
        """Like a careful uploader: write under a .part name, then rename into place."""
        self.inbox.mkdir(parents=True, exist_ok=True)
        for src in files:
            part = self.inbox / f"{src.name}.part"
            shutil.copyfile(src, part)
            os.replace(part, self.inbox / src.name)

    def waiting(self) -> list[str]:
        if not self.inbox.is_dir():
            return []
        return sorted(p.name for p in self.inbox.iterdir() if p.is_file())

    def expected(self) -> dict[tuple[str, str], Counter[str]]:
        """(resource type, identifier system or url) -> values expected exactly once."""
        with AllianceFhir(self.settings()) as api:
            assessments = [p for p in self.inputs if "assessments" in p.parts]
            goals = [p for p in self.inputs if "goals" in p.parts]
            records = api.assessment_records(assessments)
            records.extend(api.goal_records(goals))
        assert not records.problems
        out: dict[tuple[str, str], Counter[str]] = {}
        for desired in records.desired:
            system, _, value = desired.search.removeprefix("identifier=").partition("|")
            out.setdefault((desired.resource_type, system), Counter())[value] += 1
        return out

    def found(self, base_url: str | None = None) -> dict[tuple[str, str], Counter[str]]:
        settings = self.settings().model_copy(update={"server_url": base_url or self.base_url})
        out: dict[tuple[str, str], Counter[str]] = {}
        with AllianceFhir(settings) as api:
            for rtype, system in self.expected():
                hits = api.client.search(
                    rtype, {"identifier": f"{system}|"}, headers={"Cache-Control": "no-cache"}
                )
                values: Counter[str] = Counter()
                for resource in hits:
                    idents = resource.get("identifier") or []
                    if isinstance(idents, dict):
                        idents = [idents]
                    values.update(i["value"] for i in idents if i.get("system") == system)
                out[(rtype, system)] = values
        return out


class DaemonProcess:
    """``python -m alliance_fhir.daemon`` with ALLIANCE_FHIR_* settings; logs to a file."""

    def __init__(
        self, clinic: Clinic, base_url: str, name: str, *args: str, monitoring: bool = False
    ) -> None:
        self.port = _free_port()
        self.log = clinic.tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
        env.update(
            {
                "ALLIANCE_FHIR_SERVER_URL": base_url,
                "ALLIANCE_FHIR_STATE_PATH": str(clinic.state),
                "ALLIANCE_FHIR_INBOX_DIR": str(clinic.inbox),
                "ALLIANCE_FHIR_METRICS_PORT": str(self.port),
                "ALLIANCE_FHIR_INTERVAL_SECONDS": INTERVAL,
                "ALLIANCE_FHIR_INTERVAL_JITTER": "0.1",
                "ALLIANCE_FHIR_IDENTIFIER_NAMESPACE": clinic.namespace,
                "ALLIANCE_FHIR_CANONICAL_BASE": clinic.canonical,
                "ALLIANCE_FHIR_RETRY_ATTEMPTS": "2",
                "ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS": "2",
                "ALLIANCE_FHIR_TIMEOUT_SECONDS": "10",
                "ALLIANCE_FHIR_LOG_JSON": "true",
            }
        )
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alliance_fhir.daemon",
                "--labels-only",
                "--settle-seconds",
                "0.3",
                "--backoff-max",
                "2",
                *([] if monitoring else ["--no-monitoring"]),
                *args,
            ],
            cwd=str(clinic.tmp),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"{self.url}{path}", timeout=5)
        except httpx.HTTPError:
            return None

    def metrics(self) -> dict[str, float]:
        resp = self.get("/metrics")
        if resp is None or resp.status_code != 200:
            return {}
        out: dict[str, float] = {}
        for line in resp.text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def wait_up(self, timeout: float = 60) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, self.text()
            resp = self.get("/healthz")
            return resp is not None and resp.status_code == 200

        _wait_for("the daemon's /healthz", up, timeout)

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon ignored SIGTERM for {timeout}s:\n{self.text()}", pytrace=False)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._out.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()


def _assert_no_phi(*logs: str) -> None:
    for text in logs:
        leaked = [p for p in PHI if p in text]
        assert not leaked, f"PHI in daemon log: {leaked}"


def _assert_reports(clinic: Clinic) -> None:
    processed = clinic.inbox / "processed"
    assert sorted(p.name for p in processed.iterdir() if not p.name.endswith(".json")) == sorted(
        p.name for p in clinic.inputs
    )
    assert list((clinic.inbox / "failed").iterdir()) == []
    for src in clinic.inputs:
        assert (processed / f"{src.name}.report.json").is_file()


def test_inbox_files_reach_the_server_exactly_once_across_a_sigterm_mid_cycle(
    fhir_base_url: str, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    clinic = Clinic(tmp_path, fhir_base_url)
    clinic.seed()
    clinic.drop(clinic.inputs)
    total = len(clinic.inputs)

    first = DaemonProcess(clinic, fhir_base_url, "first")
    daemons.append(first)
    processed = clinic.inbox / "processed"
    _wait_for(
        "the first inbox file to be processed",
        lambda: processed.is_dir() and any(p.suffix != ".json" for p in processed.iterdir()),
        timeout=120,
        every=0.02,
    )
    assert first.stop() == 0, first.text()
    left = clinic.waiting()
    assert 0 < len(left) < total, "SIGTERM should have landed mid-cycle"
    assert '"event": "daemon.stopped"' in first.text()

    second = DaemonProcess(clinic, fhir_base_url, "second")
    daemons.append(second)
    started = time.time()
    _wait_for("the inbox to drain", lambda: not clinic.waiting(), timeout=120)

    def settled() -> bool:
        values = second.metrics()
        return (
            values.get("alliance_fhir_last_success_timestamp_seconds", 0) > started
            and values.get("alliance_fhir_inbox_depth", -1) == 0
        )

    _wait_for("a successful cycle after the inbox drained", settled, timeout=60)
    assert second.stop() == 0, second.text()

    expected = clinic.expected()
    found = clinic.found()
    for key, values in expected.items():
        assert found[key] == values, f"{key}: duplicates or missing"
    assert sum(sum(c.values()) for c in expected.values()) > 150
    _assert_reports(clinic)
    _assert_no_phi(first.text(), second.text())


def test_one_cycle_with_the_monitoring_step_plugged_in(
    fhir_base_url: str, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    """``--once`` with the monitor on: it runs after the pushes and pulls
    the responses just written; the cycle succeeds."""
    clinic = Clinic(tmp_path, fhir_base_url)
    clinic.seed()
    clinic.drop(clinic.inputs)
    time.sleep(0.5)  # past --settle-seconds, so the one cycle takes every file
    once = DaemonProcess(clinic, fhir_base_url, "once", "--once", monitoring=True)
    daemons.append(once)
    started = time.monotonic()
    try:
        code = once.proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--once did not finish:\n{once.text()}", pytrace=False)
    print(f"one full cycle on the example clinic: {time.monotonic() - started:.1f}s (process)")
    assert code == 0, once.text()
    assert clinic.waiting() == []
    events = [json.loads(line) for line in once.text().splitlines() if line.startswith("{")]
    [started_event] = [e for e in events if e["event"] == "daemon.started"]
    assert started_event["steps"][-1] == "monitoring"
    [done] = [e for e in events if e["event"] == "daemon.cycle_done"]
    assert done["ok"] is True
    assert done["failed_steps"] == []
    assert done.get("pulled", 0) >= 40  # the check-ins just pushed came back
    _assert_reports(clinic)
    _assert_no_phi(once.text())


def test_second_daemon_on_the_same_state_store_exits_with_a_clear_message(
    fhir_base_url: str, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    clinic = Clinic(tmp_path, fhir_base_url)
    first = DaemonProcess(clinic, fhir_base_url, "first")
    daemons.append(first)
    first.wait_up()
    second = DaemonProcess(clinic, fhir_base_url, "second")
    daemons.append(second)
    try:
        code = second.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the second daemon did not exit", pytrace=False)
    assert code == 3
    assert "already running on this state store" in second.text()
    assert f"pid {first.proc.pid}" in second.text()
    assert first.proc.poll() is None  # the first one is unaffected
    assert first.stop() == 0


def test_daemon_survives_a_server_outage_and_recovers_without_loss_or_duplicates(
    tmp_path: Path, file_db_server: FileDbServer, daemons: list[DaemonProcess]
) -> None:
    """Slow: the session's private file-backed server is stopped and started again."""
    base = file_db_server.base
    start_server = file_db_server.start

    try:
        start_server()
        (tmp_path / "clinic").mkdir()
        clinic = Clinic(tmp_path / "clinic", base)
        clinic.seed()
        half = len(clinic.inputs) // 2
        clinic.drop(clinic.inputs[:half])

        daemon = DaemonProcess(clinic, base, "daemon")
        daemons.append(daemon)
        _wait_for("the first half to be pushed", lambda: not clinic.waiting(), timeout=120)
        _wait_for(
            "a successful cycle",
            lambda: daemon.metrics().get("alliance_fhir_last_success_timestamp_seconds", 0) > 0,
            timeout=60,
        )
        before = daemon.metrics()
        ready = daemon.get("/readyz")
        assert ready is not None
        assert ready.status_code == 200

        assert file_db_server.stop() == 0
        clinic.drop(clinic.inputs[half:])
        _wait_for(
            "the daemon to notice the outage",
            lambda: daemon.metrics().get('alliance_fhir_errors_total{step="probe"}', 0) >= 2,
            timeout=60,
        )
        assert daemon.proc.poll() is None, daemon.text()  # no crash
        not_ready = daemon.get("/readyz")
        assert not_ready is not None
        assert not_ready.status_code == 503
        time.sleep(3)  # a few more backed-off cycles while down
        assert daemon.proc.poll() is None
        assert sorted(clinic.waiting()) == sorted(p.name for p in clinic.inputs[half:])
        assert list((clinic.inbox / "failed").iterdir()) == []
        during = daemon.metrics()
        assert during["alliance_fhir_backoff_seconds"] > 0
        cycles_while_down = during['alliance_fhir_cycles_total{outcome="failed"}']
        log_lines = daemon.text().count('"event": "daemon.cycle_start"')

        start_server()
        back_at = time.time()
        _wait_for("the inbox to drain after recovery", lambda: not clinic.waiting(), timeout=120)

        def recovered() -> bool:
            return daemon.metrics().get("alliance_fhir_last_success_timestamp_seconds", 0) > back_at

        _wait_for("a successful cycle after recovery", recovered, timeout=60)
        after = daemon.metrics()
        recovery = after["alliance_fhir_last_success_timestamp_seconds"] - back_at
        print(f"recovery: first good cycle {recovery:.1f}s after the server was back")
        assert daemon.stop() == 0, daemon.text()

        assert after['alliance_fhir_errors_total{step="probe"}'] >= 2
        assert (
            after["alliance_fhir_last_success_timestamp_seconds"]
            > before["alliance_fhir_last_success_timestamp_seconds"]
        )
        assert after['alliance_fhir_cycles_total{outcome="failed"}'] >= cycles_while_down >= 2
        assert after["alliance_fhir_backoff_seconds"] == 0
        # backed off, not busy: the cycles while down were few (interval 0.5 s, cap 2 s)
        assert log_lines < 60
        expected = clinic.expected()
        found = clinic.found(base)
        for key, values in expected.items():
            assert found[key] == values, f"{key}: duplicates or missing"
        _assert_reports(clinic)
        _assert_no_phi(daemon.text())
    finally:
        start_server()  # running again for the next test, whatever happened here
