"""Every tenant in one daemon process: a supervisor over one :class:`Daemon` per tenant.

Each tenant's daemon runs in a thread of its own with its own API (client, connection pool of
``max_connections``, state store), inbox, lock, back-off and failure counts, so a tenant whose
server is down, slow or refusing, or whose files are bad, only ever delays its own cycles: the
threads share nothing but the process. Log lines carry ``tenant=NAME``.

One ``/healthz``, ``/readyz`` and ``/metrics`` listener (the top level's ``metrics_host`` and
``metrics_port``) shows every tenant: each sample gets a ``tenant`` label, and ``/readyz`` is
200 only when every tenant is ready (its 503 names the ones that are not).

Signals as for one daemon: SIGTERM/SIGINT ask every tenant to stop after the batch in flight
(a second one abandons them), SIGHUP stops each after its cycle in flight. The exit code is the
worst of the tenants' (``--once``: 0 only when every tenant's cycle was clean).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from alliance_fhir.config import Settings
from alliance_fhir.daemon.inbox import Inbox
from alliance_fhir.daemon.lock import InstanceLock, lock_path_for
from alliance_fhir.daemon.loop import DaemonOptions, default_steps
from alliance_fhir.daemon.metrics import DaemonMetrics, MetricsServer
from alliance_fhir.daemon.metrics_multiproc import ENV as MULTIPROC_ENV
from alliance_fhir.daemon.runner import (
    EXIT_ALREADY_RUNNING,
    EXIT_CONFIG,
    EXIT_OK,
    _HangupDaemon,
    _say,
)
from alliance_fhir.exceptions import AlreadyRunningError, ConfigError
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.log import get_logger

if TYPE_CHECKING:
    from alliance_fhir.api import AllianceFhir

__all__ = ["TenantsMetrics", "run_tenants"]

log = get_logger("alliance_fhir.daemon")


class _TenantLabelled(Collector):
    """Every tenant's metric families as one set, each sample labelled ``tenant="name"``: a
    prometheus Collector, so the library writes the exposition (text or OpenMetrics, as the
    scraper asks) and a family shared by the tenants is written once."""

    def __init__(self, tenants: Mapping[str, DaemonMetrics]) -> None:
        self.tenants = tenants

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for name, metrics in self.tenants.items():
            for family in metrics.exposed.collect():
                out = merged.get(family.name)
                if out is None:
                    out = Metric(family.name, family.documentation, family.type, family.unit)
                    merged[family.name] = out
                out.samples.extend(
                    s._replace(labels={"tenant": name, **s.labels}) for s in family.samples
                )
        yield from merged.values()


class TenantsMetrics(DaemonMetrics):
    """What the listener shows for several tenants: their metrics with a ``tenant`` label and
    one readiness verdict (every tenant ready). Its own families stay unused."""

    def __init__(self, tenants: Mapping[str, DaemonMetrics]) -> None:
        super().__init__(ready_window=max(m.ready_window for m in tenants.values()))
        self.tenants = dict(tenants)
        self.exposed = CollectorRegistry()
        self.exposed.register(_TenantLabelled(self.tenants))

    def readiness(self) -> tuple[bool, str]:
        not_ready = []
        for name, metrics in self.tenants.items():
            ready, reason = metrics.readiness()
            if not ready:
                not_ready.append(f"{name}: {reason}")
        return (False, "; ".join(not_ready)) if not_ready else (True, "ready")


class _Tenant:
    """One tenant's daemon and the thread it runs in."""

    def __init__(self, name: str, daemon: _HangupDaemon) -> None:
        self.name = name
        self.daemon = daemon
        self.code: int = int(ExitCode.INTERNAL)
        self.thread = threading.Thread(
            target=self._run, name=f"alliance-fhir-tenant-{name}", daemon=True
        )

    def _run(self) -> None:
        structlog.contextvars.bind_contextvars(tenant=self.name)
        try:
            self.code = self.daemon.run_forever()
        except Exception as exc:  # a bug: this tenant ends, the others go on
            log.error("daemon.tenant_crashed", error=exc, exc_info=True)
            self.code = int(ExitCode.INTERNAL)


@contextmanager
def _stop_signals(tenants: list[_Tenant]) -> Iterator[list[int]]:
    """SIGTERM/SIGINT: every tenant stops after its batch in flight; a second one: the
    returned list says so (the caller leaves without waiting). SIGHUP: every tenant stops
    after its cycle in flight. Main thread only (tests may run elsewhere)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        for tenant in tenants:
            if signum == signal.SIGHUP:
                tenant.daemon.hangup_from_signal()
            else:
                tenant.daemon.request_stop_from_signal()

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in stops}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if received:
            log.info("daemon.signal", signals=[signal.Signals(s).name for s in received])


def run_tenants(
    root: Settings, tenants: Mapping[str, Settings], options: DaemonOptions | None = None
) -> int:
    """Run every tenant's daemon until stopped (``options.once``: one cycle each).

    Exit codes as ``runner.run``: 0, 1 (``--once``: a tenant's cycle not clean), 2 (a
    tenant's auth settings, the metrics port), 3 (another daemon holds a tenant's state
    store), 70 (a tenant's loop crashed)."""
    from alliance_fhir.api import AllianceFhir

    options = options or DaemonOptions()
    if len(tenants) > 1 and os.environ.get(MULTIPROC_ENV):
        # Every tenant's DaemonMetrics would write the same series into the shared files
        # and overwrite each other's figures: refused rather than shown wrong.
        _say(
            f"configuration error: {MULTIPROC_ENV} (several daemons on one host) cannot be "
            "combined with several tenants in one daemon yet; run one daemon per tenant "
            "(--tenant NAME) to use it"
        )
        return EXIT_CONFIG
    with ExitStack() as stack:
        running: list[_Tenant] = []
        for name, settings in tenants.items():
            lock = InstanceLock(lock_path_for(settings.state_path))
            try:
                lock.acquire()
            except AlreadyRunningError as exc:
                log.error(
                    "daemon.already_running",
                    tenant=name,
                    lock=str(exc.lock_path),
                    owner_pid=exc.owner,
                )
                _say(f"tenant {name}: {exc}")
                return EXIT_ALREADY_RUNNING
            stack.callback(lock.release)
            inbox = Inbox(settings.inbox_dir, settle_seconds=options.settle_seconds)
            inbox.ensure()
            api: AllianceFhir = stack.enter_context(AllianceFhir(settings))
            try:
                api.engine()  # builds the client: auth settings are checked now, not later
            except ConfigError as exc:
                _say(f"tenant {name}: configuration error: {exc}")
                return EXIT_CONFIG
            try:
                metrics = DaemonMetrics(ready_window=options.window(settings))
            except ConfigError as exc:
                _say(f"configuration error: {exc}")
                return EXIT_CONFIG
            steps = default_steps(options, inbox)
            daemon = _HangupDaemon(api, options, steps=steps, metrics=metrics, inbox=inbox)
            running.append(_Tenant(name, daemon))
        if options.metrics:
            combined = TenantsMetrics({t.name: t.daemon.metrics for t in running})
            try:
                server = MetricsServer(combined, root.metrics_host, root.metrics_port)
            except OSError as exc:
                _say(
                    f"cannot listen on {root.metrics_host}:{root.metrics_port} "
                    f"for /metrics: {exc.strerror}"
                )
                return EXIT_CONFIG
            server.start()
            stack.callback(server.stop)
        log.info("daemon.tenants", tenants=[t.name for t in running])
        with _stop_signals(running) as received:
            for tenant in running:
                tenant.thread.start()
            while any(t.thread.is_alive() for t in running):
                if len([s for s in received if s != signal.SIGHUP]) > 1:
                    log.warning(
                        "daemon.abandoned", reason="second stop signal; batches left in flight"
                    )
                    return EXIT_OK
                for tenant in running:
                    tenant.thread.join(timeout=0.2)
        codes = {t.name: t.code for t in running}
        log.info("daemon.tenants_stopped", exit_codes=codes)
        return max(codes.values(), default=EXIT_OK)
