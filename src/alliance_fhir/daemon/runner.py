"""Starting and stopping the daemon: lock, inbox folders, metrics server, signals, loop."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from alliance_fhir.config import Settings
from alliance_fhir.daemon.inbox import Inbox
from alliance_fhir.daemon.lock import InstanceLock, lock_path_for
from alliance_fhir.daemon.loop import Daemon, DaemonOptions, default_steps
from alliance_fhir.daemon.metrics import DaemonMetrics, MetricsServer
from alliance_fhir.exceptions import AlreadyRunningError, ConfigError
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.log import get_logger, scrub

log = get_logger("alliance_fhir.daemon")

EXIT_OK = ExitCode.OK
EXIT_CYCLE_FAILED = ExitCode.FAILED  # --once only: the single cycle did not succeed
EXIT_CONFIG = ExitCode.CONFIG
EXIT_ALREADY_RUNNING = ExitCode.ALREADY_RUNNING


class _Abandon(BaseException):
    """Raised by a second stop signal: leave the batch in flight (it is safe to)."""


def _say(message: str) -> None:
    print(f"alliance-fhir daemon: {scrub(message)}", file=sys.stderr, flush=True)


@contextmanager
def _stop_signals(daemon: Daemon) -> Iterator[None]:
    """SIGTERM/SIGINT: first one asks the loop to stop after the batch in flight; a second
    one abandons that batch. Installed only on the main thread (tests may run elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            raise _Abandon
        daemon.request_stop_from_signal()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        if received:
            log.info("daemon.signal", signals=[signal.Signals(s).name for s in received])


def run(settings: Settings, options: DaemonOptions | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (or one cycle with ``options.once``).

    Exit codes: 0 stopped on request (or ``--once`` succeeded), 1 ``--once`` cycle failed,
    2 configuration unusable (auth settings, metrics port taken), 3 another daemon holds
    this state store.
    """
    from alliance_fhir.api import AllianceFhir

    options = options or DaemonOptions()
    lock = InstanceLock(lock_path_for(settings.state_path))
    try:
        lock.acquire()
    except AlreadyRunningError as exc:
        log.error("daemon.already_running", lock=str(exc.lock_path), owner_pid=exc.owner)
        _say(str(exc))
        return EXIT_ALREADY_RUNNING
    try:
        inbox = Inbox(settings.inbox_dir, settle_seconds=options.settle_seconds)
        inbox.ensure()
        metrics = DaemonMetrics(ready_window=options.window(settings))
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
            daemon = Daemon(
                api,
                options,
                steps=default_steps(options, inbox),
                metrics=metrics,
                inbox=inbox,
            )
            try:
                with _stop_signals(daemon):
                    return daemon.run_forever()
            except _Abandon:
                log.warning("daemon.abandoned", reason="second stop signal; batch left in flight")
                return EXIT_OK
            finally:
                if server is not None:
                    server.stop()
    finally:
        lock.release()
