"""Multiprocess mode with real processes: several workers write to one private folder, and
any worker's ``/metrics`` shows them all; a worker that leaves (or is killed) leaves the live
gauges, its counters stay in the sums."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

# One worker: numbers that differ per worker, then it waits for "exit" (a clean exit) on stdin.
WORKER = textwrap.dedent(
    """
    import json, os, sys
    from alliance_fhir.daemon.metrics import DaemonMetrics, MetricsServer

    n = int(sys.argv[1])
    m = DaemonMetrics(ready_window=60)
    for _ in range(n):
        m.cycle_finished(ok=True, duration=0.2 * n, server_ok=True)
    m.backoff.set(n)
    m.inbox_depth.set(7)
    m.work_queue(pending=10 - n, leased=n, done=5)
    m.leases(held=n, claimed=n + 1, lost=n - 1)
    port = 0
    server = None
    if sys.argv[2] == "serve":
        server = MetricsServer(m, "127.0.0.1", 0).start()
        port = server.address[1]
    print("HELLO", json.dumps({"pid": os.getpid(), "worker": m.worker, "port": port}), flush=True)
    sys.stdin.readline()
    if server is not None:
        server.stop()
    """
)


class Worker:
    def __init__(self, folder: Path, n: int, serve: bool) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n), "serve" if serve else "quiet"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        while line and not line.startswith("HELLO "):  # the library's log lines come first
            line = self.proc.stdout.readline()
        assert line, self.proc.communicate(timeout=30)[1]
        hello = json.loads(line.removeprefix("HELLO "))
        self.pid: int = hello["pid"]
        self.worker: str = hello["worker"]
        self.port: int = hello["port"]

    def exit(self) -> int:
        _, err = self.proc.communicate("exit\n", timeout=60)
        assert self.proc.returncode == 0, err
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=60)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.communicate(timeout=60)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str | int) -> float | None:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())))


def test_one_scrape_shows_every_live_worker_and_forgets_the_ones_gone(
    tmp_path: Path, workers: list[Worker]
) -> None:
    folder = tmp_path / "metrics"  # missing: the first worker makes it, private
    a = Worker(folder, 1, serve=True)
    workers.append(a)
    b = Worker(folder, 2, serve=False)
    workers.append(b)
    c = Worker(folder, 3, serve=False)
    workers.append(c)
    assert folder.stat().st_mode & 0o777 == 0o700

    both = scrape(a.port)
    # counters and histograms: summed over the workers
    assert value(both, "alliance_fhir_cycles_total", outcome="ok") == 1 + 2 + 3
    assert value(both, "alliance_fhir_cycle_seconds_count") == 6
    assert value(both, "alliance_fhir_cycle_seconds_sum") == pytest.approx(0.2 + 0.8 + 1.8)
    assert value(both, "alliance_fhir_cycle_seconds_bucket", le="0.25") == 1
    # per-worker gauges: one series each, told apart by pid
    for w, n in ((a, 1), (b, 2), (c, 3)):
        assert value(both, "alliance_fhir_backoff_seconds", pid=w.pid) == n
        assert value(both, "alliance_fhir_worker_leases_held", worker=w.worker) == n
        assert value(both, "alliance_fhir_worker_leases_claimed_total", worker=w.worker) == n + 1
        assert (value(both, "process_resident_memory_bytes", pid=w.pid) or 0) > 0
    # shared state: the latest reading, not a sum
    assert value(both, "alliance_fhir_inbox_depth") == 7
    assert value(both, "alliance_fhir_work_items", state="done") == 5
    assert (value(both, "process_cpu_seconds_total") or 0) > 0

    assert b.exit() == 0  # a clean exit marks the worker dead
    c.kill()  # no chance to clean up: the next scrape notices
    after = scrape(a.port)
    assert value(after, "alliance_fhir_backoff_seconds", pid=a.pid) == 1
    assert value(after, "alliance_fhir_backoff_seconds", pid=b.pid) is None
    assert value(after, "alliance_fhir_backoff_seconds", pid=c.pid) is None
    assert value(after, "alliance_fhir_worker_leases_held", worker=b.worker) is None
    assert value(after, "alliance_fhir_worker_leases_held", worker=c.worker) is None
    # totals never go down when a worker leaves
    assert value(after, "alliance_fhir_cycles_total", outcome="ok") == 6
    assert value(after, "alliance_fhir_worker_leases_lost_total", worker=c.worker) == 2
    assert a.exit() == 0
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith("gauge_live")) == []


def test_an_open_folder_is_made_private_before_use(tmp_path: Path, workers: list[Worker]) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    os.chmod(folder, 0o755)  # noqa: S103  # the open folder an operator might have made
    w = Worker(folder, 1, serve=False)
    workers.append(w)
    assert folder.stat().st_mode & 0o777 == 0o700
    w.exit()


def test_the_variable_set_after_import_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """In-process, the library already chose memory: pretending otherwise would show one
    worker's numbers as if they were the host's."""
    from alliance_fhir.daemon.metrics import DaemonMetrics
    from alliance_fhir.exceptions import ConfigError

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="must be set before the process starts"):
        DaemonMetrics(ready_window=60)


class Daemon:
    """A real ``python -m alliance_fhir.daemon`` in an outage (nothing listens on its FHIR
    port), its own state store, and the shared metrics folder."""

    def __init__(self, tmp_path: Path, name: str, folder: Path) -> None:
        home = tmp_path / name
        home.mkdir()
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "ALLIANCE_FHIR_SERVER_URL": "http://127.0.0.1:9/fhir",
            "ALLIANCE_FHIR_STATE_PATH": str(home / "state.sqlite3"),
            "ALLIANCE_FHIR_INBOX_DIR": str(home / "inbox"),
            "ALLIANCE_FHIR_METRICS_HOST": "127.0.0.1",
            "ALLIANCE_FHIR_METRICS_PORT": "0",
            "ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS": "0.2",
            "ALLIANCE_FHIR_LOG_JSON": "true",
        }
        env.pop("ALLIANCE_FHIR_CONFIG", None)
        cmd = [sys.executable, "-m", "alliance_fhir.daemon", "--no-monitoring"]
        cmd += ["--backoff-max", "0.5"]
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.port = 0
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # the listening port is logged once, at start
            if '"daemon.metrics_listening"' in line:
                self.port = int(json.loads(line)["port"])
                break
        assert self.port, "the daemon never listened"
        self.pid = self.proc.pid
        # keep reading so the daemon never blocks on a full pipe
        self._drain = threading.Thread(target=self.proc.stderr.read, daemon=True)
        self._drain.start()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def test_two_real_daemons_one_metrics_endpoint(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    daemons = [Daemon(tmp_path, "one", folder), Daemon(tmp_path, "two", folder)]
    one, two = daemons
    try:

        def both_failing() -> Samples | None:
            got = scrape(one.port)
            down = [
                value(got, "alliance_fhir_consecutive_failed_cycles", pid=d.pid) for d in daemons
            ]
            return got if all((n or 0) >= 1 for n in down) else None

        got = _wait(both_failing)
        probes = value(got, "alliance_fhir_errors_total", step="probe") or 0
        per_worker = [
            value(got, "alliance_fhir_consecutive_failed_cycles", pid=d.pid) or 0 for d in daemons
        ]
        assert probes >= sum(per_worker)  # both daemons' failed probes in one sum
        assert (value(got, "process_resident_memory_bytes", pid=two.pid) or 0) > 0
        assert samples_for(scrape(two.port), "alliance_fhir_start_timestamp_seconds") == {
            one.pid,
            two.pid,
        }  # either daemon's endpoint shows both

        assert two.stop() == 0
        after = scrape(one.port)
        assert samples_for(after, "alliance_fhir_start_timestamp_seconds") == {one.pid}
        assert (value(after, "alliance_fhir_errors_total", step="probe") or 0) >= probes
        assert one.stop() == 0
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()


def samples_for(samples: Samples, name: str) -> set[int]:
    """The pids that have a series of ``name``."""
    return {int(dict(labels)["pid"]) for (n, labels) in samples if n == name}


def _wait(probe: Callable[[], Samples | None], timeout: float = 60) -> Samples:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (got := probe()) is not None:
            return got
        time.sleep(0.2)
    raise AssertionError("both daemons never showed a failed cycle in one scrape")
