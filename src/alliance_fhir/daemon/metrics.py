"""Health and metrics over local HTTP (stdlib ``http.server`` in a daemon thread).

* ``GET /healthz`` — 200 while the process serves requests (liveness).
* ``GET /readyz``  — 200 when the last cycle succeeded and the FHIR server answered within
  the readiness window, else 503 (with a one-line reason).
* ``GET /metrics`` — Prometheus text exposition format 0.0.4.

The handler only reads in-memory numbers under a lock; it never touches the state store or
the FHIR server, so a scrape cannot slow down or block a cycle. Nothing here carries PHI:
metric labels are step names and operations, never record keys.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from alliance_fhir.log import get_logger

log = get_logger("alliance_fhir.daemon")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "alliance_fhir_"

Kind = Literal["counter", "gauge"]
LabelKey = tuple[tuple[str, str], ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it (integers without a fraction, +Inf, NaN)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass
class Metric:
    """One metric family: a counter (only goes up) or a gauge, with optional labels."""

    name: str
    help: str
    kind: Kind
    labelnames: tuple[str, ...] = ()
    _values: dict[LabelKey, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _key(self, labels: Mapping[str, str]) -> LabelKey:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple((k, str(labels[k])) for k in self.labelnames)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if self.kind == "counter" and amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: str) -> None:
        if self.kind == "counter":
            raise ValueError(f"counter {self.name} cannot be set")
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def touch(self, **labels: str) -> None:
        """Make a labelled series visible at 0 before its first event."""
        key = self._key(labels)
        with self._lock:
            self._values.setdefault(key, 0.0)

    def get(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            values = dict(self._values)
        if not values and not self.labelnames:
            values[()] = 0.0
        for key, value in sorted(values.items()):
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in key)
            series = f"{self.name}{{{labels}}}" if labels else self.name
            lines.append(f"{series} {format_value(value)}")
        return lines


class Registry:
    """The metric families of one process, rendered in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def _add(self, name: str, help: str, kind: Kind, labelnames: Iterable[str]) -> Metric:
        full = name if name.startswith(PREFIX) else PREFIX + name
        if full in self._metrics:
            raise ValueError(f"metric {full} registered twice")
        metric = Metric(full, help, kind, tuple(labelnames))
        self._metrics[full] = metric
        return metric

    def counter(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Metric:
        return self._add(name, help, "counter", labelnames)

    def gauge(self, name: str, help: str, labelnames: Iterable[str] = ()) -> Metric:
        return self._add(name, help, "gauge", labelnames)

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


class DaemonMetrics:
    """The daemon's numbers, and the readiness verdict built from them."""

    def __init__(self, *, ready_window: float, clock: Callable[[], float] = time.time) -> None:
        self.ready_window = ready_window
        self.clock = clock
        self.started = clock()
        r = self.registry = Registry()
        self.cycles = r.counter("cycles_total", "Daemon cycles run, by outcome.", ["outcome"])
        self.last_success = r.gauge(
            "last_success_timestamp_seconds",
            "Unix time at which the last fully successful cycle ended (0: none yet).",
        )
        self.last_cycle = r.gauge(
            "last_cycle_timestamp_seconds", "Unix time at which the last cycle ended."
        )
        self.cycle_duration = r.gauge(
            "cycle_duration_seconds", "Wall time the last cycle took, in seconds."
        )
        self.pushed = r.counter(
            "resources_pushed_total",
            "Resources written to the FHIR server, by operation (created, updated).",
            ["operation"],
        )
        self.pulled = r.counter(
            "resources_pulled_total", "Resources pulled from the FHIR server (monitoring)."
        )
        self.errors = r.counter(
            "errors_total", "Failed daemon steps, by step (server down, fatal, bug).", ["step"]
        )
        self.conflicts = r.gauge(
            "conflicts", "Records left in conflict (changed on the server; not overwritten)."
        )
        self.conflicts_seen = r.counter(
            "conflicts_total", "Conflicts met by sync runs (a record may count in many runs)."
        )
        self.dead_letters = r.gauge(
            "dead_letters", "Open dead letters: records the server refused, waiting for a fix."
        )
        self.rejected = r.counter("rejected_total", "Records the server refused in sync runs.")
        self.inbox_depth = r.gauge(
            "inbox_depth", "Input files waiting in the inbox (including ones still being written)."
        )
        self.inbox_files = r.counter(
            "inbox_files_total", "Inbox files handled, by outcome (processed, failed).", ["outcome"]
        )
        self.server_up = r.gauge(
            "server_reachable", "1 when the FHIR server answered during the last cycle, else 0."
        )
        self.last_server_ok = r.gauge(
            "server_last_reachable_timestamp_seconds",
            "Unix time the FHIR server last answered (0: not yet).",
        )
        self.backoff = r.gauge(
            "backoff_seconds", "Current back-off delay after failed cycles (0: healthy)."
        )
        self.consecutive_failures = r.gauge(
            "consecutive_failed_cycles", "Failed cycles in a row (0 after a success)."
        )
        self.up_since = r.gauge("start_timestamp_seconds", "Unix time the daemon started.")
        self.up_since.set(self.started)
        for outcome in ("ok", "failed"):
            self.cycles.touch(outcome=outcome)
        for op in ("created", "updated"):
            self.pushed.touch(operation=op)
        for outcome in ("processed", "failed"):
            self.inbox_files.touch(outcome=outcome)
        self._last_cycle_ok: bool | None = None
        self._lock = threading.Lock()

    def cycle_finished(self, *, ok: bool, duration: float, server_ok: bool | None) -> None:
        now = self.clock()
        with self._lock:
            self._last_cycle_ok = ok
        self.cycles.inc(outcome="ok" if ok else "failed")
        self.cycle_duration.set(duration)
        self.last_cycle.set(now)
        if ok:
            self.last_success.set(now)
        if server_ok is not None:
            self.server_up.set(1 if server_ok else 0)
            if server_ok:
                self.last_server_ok.set(now)

    # The shared work queue (several daemons on one PostgreSQL store: daemon.workers)

    def work_queue(self, *, pending: int, leased: int, done: int) -> None:
        """The queue's items by state, as this worker last read them."""
        with self._lock:  # made on first use (workers only), from two threads
            if not hasattr(self, "_work_items"):
                self._work_items = self.registry.gauge(
                    "work_items",
                    "Shared work-queue items, by state (pending, leased, done).",
                    ["state"],
                )
        for state, n in (("pending", pending), ("leased", leased), ("done", done)):
            self._work_items.set(n, state=state)

    def leases(self, *, held: int, claimed: int, lost: int) -> None:
        """Leases this worker holds now; ``claimed``/``lost`` are increments."""
        with self._lock:  # made on first use (workers only), from two threads
            if not hasattr(self, "_leases_held"):
                r = self.registry
                self._leases_held = r.gauge("leases_held", "Work-item leases this worker holds.")
                self._leases_claimed = r.counter(
                    "leases_claimed_total", "Work items this worker claimed."
                )
                self._leases_lost = r.counter(
                    "leases_lost_total",
                    "Leases this worker lost (it stalled past lease_seconds; another took over).",
                )
        self._leases_held.set(held)
        if claimed:
            self._leases_claimed.inc(claimed)
        if lost:
            self._leases_lost.inc(lost)

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            last_ok = self._last_cycle_ok
        if last_ok is None:
            return False, "no cycle finished yet"
        if not last_ok:
            return False, "last cycle failed"
        seen = self.last_server_ok.get()
        if seen <= 0 or self.clock() - seen > self.ready_window:
            return False, "FHIR server not reached recently"
        return True, "ready"

    def render(self) -> str:
        return self.registry.render()


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    server_version = "alliance-fhir-daemon"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if path == "/healthz":
            self._send(200, "ok\n")
        elif path == "/readyz":
            ready, reason = metrics.readiness()
            self._send(200 if ready else 503, reason + "\n")
        elif path == "/metrics":
            self._send(200, metrics.render(), CONTENT_TYPE)
        else:
            self._send(404, "not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(
        self, status: int, body: str, content_type: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds would drown the daemon's log)."""


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: DaemonMetrics) -> None:
        self.metrics = metrics
        super().__init__(address, _Handler)


class MetricsServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, metrics: DaemonMetrics, host: str, port: int) -> None:
        self._server = _MetricsHTTPServer((host, port), metrics)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="alliance-fhir-metrics",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self._thread.start()
        host, port = self.address
        log.info("daemon.metrics_listening", host=host, port=port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
