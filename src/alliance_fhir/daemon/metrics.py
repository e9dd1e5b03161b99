"""The daemon's numbers, on ``prometheus_client``, and the readiness verdict built from them.

Served over local HTTP by ``metrics_http`` (``/healthz``, ``/readyz``, ``/metrics``). Each
``DaemonMetrics`` has its own ``CollectorRegistry`` (never the library's global one), so
tests and embedding programs can hold several without collisions. With
``PROMETHEUS_MULTIPROC_DIR`` set, values go to per-process files and ``/metrics`` merges every
worker on the host (``metrics_multiproc``); each gauge says how its workers combine.

Nothing here carries PHI: label values are outcomes, operations, step names, queue states and
a worker id made of host name and pid, never record keys, file names or patient data.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from alliance_fhir.daemon.metrics_http import MetricsServer
from alliance_fhir.daemon.metrics_multiproc import (
    LiveMultiProcessCollector,
    ProcessMirror,
    multiproc_dir,
    prepare,
    process_mirror,
)

__all__ = ["CYCLE_BUCKETS", "PREFIX", "DaemonMetrics", "Family", "MetricsServer", "worker_id"]

PREFIX = "alliance_fhir_"

# A cycle is a probe and a few pushes when nothing changed (well under a second), minutes
# when a large inbox or a long monitor pull lands, and an hour is already an incident.
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)

# How one gauge's values from several live workers combine in multiprocess mode:
# per worker (a ``pid`` label each), or the latest reading of state all workers share.
PER_WORKER: Final = "liveall"
SHARED: Final = "livemostrecent"
Mode = Literal["liveall", "livemostrecent", "livesum"]


def worker_id() -> str:
    """This process as a worker: host name and pid (no PHI, unique while it lives)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Family:
    """One metric family behind the small interface the loop uses: inc, set and get by
    label, so callers need not hold the library's labelled children."""

    def __init__(self, metric: Counter | Gauge, name: str, labelnames: Iterable[str] = ()) -> None:
        self.metric = metric
        self.labelnames = tuple(labelnames)
        self.counter = isinstance(metric, Counter)
        self.name = name
        self._sample = name if not self.counter or name.endswith("_total") else name + "_total"

    def _child(self, labels: dict[str, str]) -> Counter | Gauge:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return self.metric.labels(**labels) if self.labelnames else self.metric

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if self.counter and amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease")
        self._child(labels).inc(amount)

    def set(self, value: float, **labels: str) -> None:
        child = self._child(labels)
        if not isinstance(child, Gauge):
            raise ValueError(f"counter {self.name} cannot be set")
        child.set(value)

    def touch(self, **labels: str) -> None:
        """Make a labelled series visible at 0 before its first event."""
        self._child(labels)

    def get(self, **labels: str) -> float:
        """This process's value (in multiprocess mode too: not the merged one)."""
        self._child(labels)
        for family in self.metric.collect():
            for sample in family.samples:
                if sample.name == self._sample and sample.labels == labels:
                    return float(sample.value)
        return 0.0


class DaemonMetrics:
    """The daemon's numbers, and the readiness verdict built from them."""

    def __init__(
        self,
        *,
        ready_window: float,
        clock: Callable[[], float] = time.time,
        worker: str | None = None,
    ) -> None:
        self.ready_window = ready_window
        self.clock = clock
        self.started = clock()
        self.worker = worker or worker_id()
        self.multiproc = multiproc_dir()
        if self.multiproc is not None:
            prepare(self.multiproc)
        r = self.registry = CollectorRegistry()

        def counter(name: str, help: str, labelnames: Iterable[str] = ()) -> Family:
            metric = Counter(PREFIX + name, help, labelnames, registry=r)
            return Family(metric, PREFIX + name, labelnames)

        def gauge(name: str, help: str, mode: Mode, labelnames: Iterable[str] = ()) -> Family:
            metric = Gauge(PREFIX + name, help, labelnames, registry=r, multiprocess_mode=mode)
            return Family(metric, PREFIX + name, labelnames)

        self.cycles = counter("cycles_total", "Daemon cycles run, by outcome.", ["outcome"])
        self.last_success = gauge(
            "last_success_timestamp_seconds",
            "Unix time at which the last fully successful cycle ended (0: none yet).",
            PER_WORKER,
        )
        self.last_cycle = gauge(
            "last_cycle_timestamp_seconds", "Unix time at which the last cycle ended.", PER_WORKER
        )
        self.cycle_duration = gauge(
            "cycle_duration_seconds", "Wall time the last cycle took, in seconds.", PER_WORKER
        )
        self.cycle_seconds = Histogram(
            PREFIX + "cycle_seconds",
            "Wall time of daemon cycles, in seconds (all cycles, as a histogram).",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self.pushed = counter(
            "resources_pushed_total",
            "Resources written to the FHIR server, by operation (created, updated).",
            ["operation"],
        )
        self.pulled = counter(
            "resources_pulled_total", "Resources pulled from the FHIR server (monitoring)."
        )
        self.errors = counter(
            "errors_total", "Failed daemon steps, by step (server down, fatal, bug).", ["step"]
        )
        self.conflicts = gauge(
            "conflicts",
            "Records left in conflict (changed on the server; not overwritten).",
            SHARED,
        )
        # Was ``conflicts_total``: the library (like OpenMetrics) names a counter's family
        # without ``_total``, which would be ``conflicts``, the gauge above.
        self.conflicts_seen = counter(
            "sync_conflicts_total", "Conflicts met by sync runs (a record may count in many runs)."
        )
        self.dead_letters = gauge(
            "dead_letters",
            "Open dead letters: records the server refused, waiting for a fix.",
            SHARED,
        )
        self.rejected = counter("rejected_total", "Records the server refused in sync runs.")
        self.inbox_depth = gauge(
            "inbox_depth",
            "Input files waiting in the inbox (including ones still being written).",
            SHARED,
        )
        self.inbox_files = counter(
            "inbox_files_total", "Inbox files handled, by outcome (processed, failed).", ["outcome"]
        )
        self.server_up = gauge(
            "server_reachable",
            "1 when the FHIR server answered during the last cycle, else 0.",
            PER_WORKER,
        )
        self.last_server_ok = gauge(
            "server_last_reachable_timestamp_seconds",
            "Unix time the FHIR server last answered (0: not yet).",
            PER_WORKER,
        )
        self.backoff = gauge(
            "backoff_seconds",
            "Current back-off delay after failed cycles (0: healthy).",
            PER_WORKER,
        )
        self.consecutive_failures = gauge(
            "consecutive_failed_cycles", "Failed cycles in a row (0 after a success).", PER_WORKER
        )
        self.up_since = gauge(
            "start_timestamp_seconds", "Unix time the daemon started.", PER_WORKER
        )
        self.work_items = gauge(
            "work_items",
            "Work items in the shared queue, by state (pending, leased, done).",
            SHARED,
            ["state"],
        )
        self.leases_held = gauge(
            "worker_leases_held", "Work-item leases this worker holds now.", "livesum", ["worker"]
        )
        self.leases_claimed = counter(
            "worker_leases_claimed_total", "Work-item leases claimed, by worker.", ["worker"]
        )
        self.leases_lost = counter(
            "worker_leases_lost_total",
            "Work-item leases lost (expired before the work was done), by worker.",
            ["worker"],
        )
        self.up_since.set(self.started)
        for outcome in ("ok", "failed"):
            self.cycles.touch(outcome=outcome)
        for op in ("created", "updated"):
            self.pushed.touch(operation=op)
        for outcome in ("processed", "failed"):
            self.inbox_files.touch(outcome=outcome)

        self._mirror: ProcessMirror | None = None
        if self.multiproc is None:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            self.exposed = r
        else:
            self.exposed = CollectorRegistry()
            self.exposed.register(LiveMultiProcessCollector(self.multiproc))
            PlatformCollector(registry=self.exposed)
            self._mirror = process_mirror()
            self._mirror.refresh()

        self._last_cycle_ok: bool | None = None
        self._server_seen = 0.0
        self._lock = threading.Lock()

    # What the loop and the workers report

    def cycle_finished(self, *, ok: bool, duration: float, server_ok: bool | None) -> None:
        now = self.clock()
        with self._lock:
            self._last_cycle_ok = ok
            if server_ok:
                self._server_seen = now
        self.cycles.inc(outcome="ok" if ok else "failed")
        self.cycle_duration.set(duration)
        self.cycle_seconds.observe(duration)
        self.last_cycle.set(now)
        if ok:
            self.last_success.set(now)
        if server_ok is not None:
            self.server_up.set(1 if server_ok else 0)
            if server_ok:
                self.last_server_ok.set(now)
        if self._mirror is not None:
            self._mirror.refresh()

    def work_queue(self, *, pending: int, leased: int, done: int) -> None:
        """The shared queue as this worker last read it (every worker sees the same queue:
        in multiprocess mode the latest reading wins, nothing is summed)."""
        for state, n in (("pending", pending), ("leased", leased), ("done", done)):
            self.work_items.set(n, state=state)

    def leases(self, *, held: int, claimed: int, lost: int) -> None:
        """This worker's leases: ``held`` now, ``claimed`` and ``lost`` since the last call."""
        if claimed < 0 or lost < 0:
            raise ValueError("claimed and lost are increments: never negative")
        self.leases_held.set(held, worker=self.worker)
        self.leases_claimed.inc(claimed, worker=self.worker)
        self.leases_lost.inc(lost, worker=self.worker)

    # What the HTTP endpoints answer

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            last_ok = self._last_cycle_ok
            seen = self._server_seen
        if last_ok is None:
            return False, "no cycle finished yet"
        if not last_ok:
            return False, "last cycle failed"
        if seen <= 0 or self.clock() - seen > self.ready_window:
            return False, "FHIR server not reached recently"
        return True, "ready"

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The ``/metrics`` body and its content type, negotiated by the library from the
        scraper's Accept header (Prometheus text 0.0.4 unless OpenMetrics is asked for)."""
        if self._mirror is not None:
            self._mirror.refresh()
        encode, content_type = choose_encoder(accept)
        return encode(self.exposed), content_type

    def render(self) -> str:
        """The Prometheus text exposition, as ``/metrics`` sends it by default."""
        if self._mirror is not None:
            self._mirror.refresh()
        return generate_latest(self.exposed).decode("utf-8")
