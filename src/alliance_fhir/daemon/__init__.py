"""The background sync daemon: ``python -m alliance_fhir.daemon`` / ``alliance-fhir daemon``.

Each cycle publishes changed instruments, ingests the inbox folder, pushes the configured
inputs and runs the monitor (``api.monitor()``) unless told not to; it sleeps the interval
with jitter and backs off while the FHIR server is unreachable. One instance per SQLite state
store (a lock file); any number on a PostgreSQL one, sharing the work through leases
(``daemon.workers``); ``/healthz``, ``/readyz`` and ``/metrics`` on a local port. See
docs/daemon.md.
"""

from alliance_fhir.daemon.inbox import FileResult, Inbox, classify, is_ignored
from alliance_fhir.daemon.lock import InstanceLock, lock_path_for
from alliance_fhir.daemon.loop import (
    Backoff,
    CycleContext,
    CycleResult,
    Daemon,
    DaemonOptions,
    Step,
    StepIncomplete,
    StepOutcome,
    default_steps,
    jittered,
    monitoring_step,
)
from alliance_fhir.daemon.metrics import DaemonMetrics, MetricsServer
from alliance_fhir.daemon.runner import (
    EXIT_ALREADY_RUNNING,
    EXIT_CONFIG,
    EXIT_CYCLE_FAILED,
    EXIT_OK,
    run,
)
from alliance_fhir.exceptions import AlreadyRunningError

__all__ = [
    "EXIT_ALREADY_RUNNING",
    "EXIT_CONFIG",
    "EXIT_CYCLE_FAILED",
    "EXIT_OK",
    "AlreadyRunningError",
    "Backoff",
    "CycleContext",
    "CycleResult",
    "Daemon",
    "DaemonMetrics",
    "DaemonOptions",
    "FileResult",
    "Inbox",
    "InstanceLock",
    "MetricsServer",
    "Step",
    "StepIncomplete",
    "StepOutcome",
    "classify",
    "default_steps",
    "is_ignored",
    "jittered",
    "lock_path_for",
    "monitoring_step",
    "run",
]
