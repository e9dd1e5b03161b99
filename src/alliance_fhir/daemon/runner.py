"""Starting and stopping the daemon: lock, inbox folders, metrics server, signals, loop.

SIGHUP (a terminal closing, ``systemctl reload``, an operator asking for the new config)
finishes the cycle in flight, logs ``daemon.stopped`` with ``reason=hangup`` and exits 0; the
service manager (``Restart=always``) starts it again with the new configuration. Reloading
in-process was not chosen: settings reach the client, auth, metrics server and inbox, and a
fresh process is the one way to be sure every part sees the new ones.

With a SQLite state store one daemon runs (the lock file beside it). With PostgreSQL any
number run and share the work through leases (``daemon.workers``); a stop signal then drains:
no new claims, the item in hand finishes within ``drain_seconds`` (then it is abandoned, as
after a second signal), the leases held are released, exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from alliance_fhir.config import Settings
from alliance_fhir.daemon.inbox import Inbox
from alliance_fhir.daemon.lock import InstanceLock, lock_path_for
from alliance_fhir.daemon.loop import CycleResult, Daemon, DaemonOptions, Step, default_steps
from alliance_fhir.daemon.metrics import DaemonMetrics, MetricsServer
from alliance_fhir.exceptions import AlreadyRunningError, ConfigError, StateError
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.log import get_logger, scrub

if TYPE_CHECKING:
    from alliance_fhir.api import AllianceFhir
    from alliance_fhir.daemon.workers import Leases

log = get_logger("alliance_fhir.daemon")

EXIT_OK = ExitCode.OK
EXIT_CYCLE_FAILED = ExitCode.FAILED  # --once only: the single cycle did not succeed
EXIT_CONFIG = ExitCode.CONFIG
EXIT_ALREADY_RUNNING = ExitCode.ALREADY_RUNNING


class _Abandon(BaseException):
    """Raised by a second stop signal: leave the batch in flight (it is safe to)."""


def _say(message: str) -> None:
    print(f"alliance-fhir daemon: {scrub(message)}", file=sys.stderr, flush=True)


class _HangupDaemon(Daemon):
    """A Daemon that, after a SIGHUP, stops at the end of the cycle in flight (or at once
    when it is sleeping between cycles)."""

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]  # passed through unchanged
        self._hangup = threading.Event()
        self._in_cycle = threading.Event()

    def run_cycle(self) -> CycleResult:
        self._in_cycle.set()
        try:
            return super().run_cycle()
        finally:
            self._in_cycle.clear()
            if self._hangup.is_set():
                self._stop_for_hangup()

    def hangup_from_signal(self) -> None:
        """Safe inside a signal handler: only sets events (from a helper thread)."""
        self._hangup.set()
        if not self._in_cycle.is_set():
            self._stop_for_hangup(from_signal=True)

    def _stop_for_hangup(self, *, from_signal: bool = False) -> None:
        # every later line of this run (daemon.stopped among them) says why it stopped
        structlog.contextvars.bind_contextvars(reason="hangup")
        if from_signal:
            self.request_stop_from_signal()
        else:
            self.request_stop()


@contextmanager
def _stop_signals(
    daemon: _HangupDaemon, on_stop: Callable[[], None] | None = None
) -> Iterator[None]:
    """SIGTERM/SIGINT: first one asks the loop to stop after the batch in flight; a second
    one abandons that batch. SIGHUP: stop after the cycle in flight. Installed only on the
    main thread (tests may run elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len([s for s in received if s != signal.SIGHUP]) > 1:
            raise _Abandon
        if signum == signal.SIGHUP:
            daemon.hangup_from_signal()
        else:
            daemon.request_stop_from_signal()
            if on_stop is not None:
                on_stop()

    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in stops}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if received:
            log.info("daemon.signal", signals=[signal.Signals(s).name for s in received])
        structlog.contextvars.unbind_contextvars("reason")


def _leases(api: AllianceFhir, metrics: DaemonMetrics) -> Leases:
    """This worker's leases on the store's work queue (a connection of its own), its
    heartbeat started."""
    from alliance_fhir.api.workers import work_queue
    from alliance_fhir.daemon.workers import Leases

    settings = api.settings
    leases = Leases(
        work_queue(api),
        lease_seconds=settings.lease_seconds,
        retry_seconds=settings.interval_seconds,
        metrics=metrics,
    )
    leases.start()
    return leases


def _worker_steps(options: DaemonOptions, inbox: Inbox, leases: Leases) -> list[Step]:
    from alliance_fhir.daemon.workers import worker_steps

    return worker_steps(options, inbox, leases)


def _drain_timer(seconds: float) -> Callable[[], None]:
    """Called by the first stop signal: after ``seconds`` the process signals itself once
    more, which abandons the item in hand (the second-signal path); its lease is released."""

    def start() -> None:
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    return start


def run(settings: Settings, options: DaemonOptions | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT/SIGHUP (or one cycle with ``options.once``).

    Exit codes: 0 stopped on request or after a SIGHUP (or ``--once`` succeeded), 1 ``--once``
    cycle failed, 2 configuration unusable (auth settings, metrics port taken, the shared
    state store's work queue unusable), 3 another daemon holds this (SQLite) state store.
    """
    from alliance_fhir.api import AllianceFhir

    options = options or DaemonOptions()
    shared = settings.effective_state_url.startswith(("postgresql://", "postgres://"))
    # one daemon per SQLite file; on PostgreSQL the leases coordinate any number
    lock = InstanceLock(lock_path_for(settings.state_path))
    try:
        if not shared:
            lock.acquire()
    except AlreadyRunningError as exc:
        log.error("daemon.already_running", lock=str(exc.lock_path), owner_pid=exc.owner)
        _say(str(exc))
        return EXIT_ALREADY_RUNNING
    try:
        inbox = Inbox(settings.inbox_dir, settle_seconds=options.settle_seconds)
        inbox.ensure()
        try:
            metrics = DaemonMetrics(ready_window=options.window(settings))
        except ConfigError as exc:  # PROMETHEUS_MULTIPROC_DIR unusable: a setting, not a bug
            _say(f"configuration error: {exc}")
            return EXIT_CONFIG
        with AllianceFhir(settings) as api:
            try:
                api.engine()  # builds the client: auth settings are checked now, not later
            except ConfigError as exc:
                _say(f"configuration error: {exc}")
                return EXIT_CONFIG
            server: MetricsServer | None = None
            if options.metrics:
                try:
                    server = MetricsServer(metrics, settings.metrics_host, settings.metrics_port)
                except OSError as exc:
                    _say(
                        f"cannot listen on {settings.metrics_host}:{settings.metrics_port} "
                        f"for /metrics: {exc.strerror}"
                    )
                    return EXIT_CONFIG
                server.start()
            try:
                leases = _leases(api, metrics) if shared else None
            except StateError as exc:  # the shared store is unusable: nothing to coordinate on
                if server is not None:
                    server.stop()
                _say(str(exc))
                return EXIT_CONFIG
            daemon = _HangupDaemon(
                api,
                options,
                steps=(
                    _worker_steps(options, inbox, leases)
                    if leases is not None
                    else default_steps(options, inbox)
                ),
                metrics=metrics,
                inbox=inbox,
            )
            drain = _drain_timer(settings.drain_seconds) if leases is not None else None
            try:
                with _stop_signals(daemon, drain):
                    return daemon.run_forever()
            except _Abandon:
                log.warning("daemon.abandoned", reason="second stop signal; batch left in flight")
                return EXIT_OK
            finally:
                if leases is not None:
                    leases.stop()
                if server is not None:
                    server.stop()
    finally:
        lock.release()
