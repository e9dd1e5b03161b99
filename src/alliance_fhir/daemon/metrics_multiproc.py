"""Multiprocess mode: several daemon workers on one host, one ``/metrics`` showing them all.

``prometheus_client`` decides at import time whether metric values live in memory or in
per-process files, from the ``PROMETHEUS_MULTIPROC_DIR`` environment variable. We use that
variable and no setting of our own: a value from the config file would arrive after the
library (and any other instrumented library in the process) had already chosen, so the two
could disagree. The service manager sets it for every worker (systemd: ``RuntimeDirectory=``
gives a fresh, private folder on each start of the group).

The folder is made 0700 (created so, or tightened if we own it; refused if someone else
does): the files name nothing but metrics, but other users have no business reading or
planting them. Any worker's ``/metrics`` merges every file in it. Gauges in ``live*`` modes
belong to live workers only: a worker removes its own on exit (``mark_process_dead``), and
a scrape also removes those of workers that died without saying so (SIGKILL), so a killed
worker's backoff or lease count does not linger. Counters and histograms of dead workers stay
in the sums, as the library intends (a total never goes down).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Counter, Gauge, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from alliance_fhir.exceptions import ConfigError
from alliance_fhir.log import get_logger
from alliance_fhir.private_files import DIR_MODE, private_dir

log = get_logger("alliance_fhir.daemon")

ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")

_prepared: set[str] = set()
_prepared_lock = threading.Lock()


def multiproc_dir() -> Path | None:
    """The shared folder when multiprocess mode is on, else None.

    Raises ConfigError when the variable and the library disagree (it was set after
    ``prometheus_client`` had been imported, so this process's values are in memory only).
    """
    raw = os.environ.get(ENV, "")
    in_files = bool(getattr(values.ValueClass, "_multiprocess", False))
    if not raw:
        if in_files:
            raise ConfigError(f"{ENV} was unset after prometheus_client chose multiprocess mode")
        return None
    if not in_files:
        raise ConfigError(
            f"{ENV} must be set before the process starts (prometheus_client was imported first)"
        )
    return Path(raw)


def prepare(folder: Path) -> None:
    """Make ``folder`` private (0700) and clear this pid's leftover live gauges, once per
    process: a pid reused after a crash must not start with a dead worker's figures."""
    key = str(folder)
    with _prepared_lock:
        if key in _prepared:
            return
        private_dir(folder)
        info = folder.stat()
        if not stat.S_ISDIR(info.st_mode):
            raise ConfigError(f"{ENV} is not a folder: {folder}")
        if info.st_uid != os.geteuid():
            raise ConfigError(f"{ENV} folder {folder} belongs to another user")
        if stat.S_IMODE(info.st_mode) != DIR_MODE:
            os.chmod(folder, DIR_MODE)
            log.warning("daemon.metrics_dir_tightened", mode=oct(DIR_MODE))
        _forget(os.getpid(), folder)
        atexit.register(mark_dead, folder)
        _prepared.add(key)


def _forget(pid: int, folder: Path) -> None:
    """The library's ``mark_process_dead``, which ships without annotations."""
    mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]  # untyped upstream


def mark_dead(folder: Path) -> None:
    """This worker is leaving: its live gauges leave the merged view (counters stay)."""
    with contextlib.suppress(OSError):
        _forget(os.getpid(), folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, not ours to judge
        return True
    return True


def prune_dead(folder: Path) -> list[int]:
    """Remove the live gauges of workers on this host that are gone; return their pids."""
    gone: set[int] = set()
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        match = _LIVE_FILE.match(os.path.basename(path))
        if match and not _alive(pid := int(match.group(1))):
            gone.add(pid)
    for pid in sorted(gone):
        with contextlib.suppress(OSError):  # another worker pruned it first
            _forget(pid, folder)
    return sorted(gone)


class LiveMultiProcessCollector(Collector):
    """``MultiProcessCollector`` that first forgets workers that died without cleaning up."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # untyped upstream: the constructor and collect() carry no annotations
        self._merged = MultiProcessCollector(None, path=str(folder))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        prune_dead(self.folder)
        merged: Iterable[Metric] = self._merged.collect()  # type: ignore[no-untyped-call]
        return merged


class ProcessMirror:
    """This worker's ``process_*`` figures, written to the shared folder.

    A ``ProcessCollector`` reports the process that answers the scrape, which in
    multiprocess mode is any one worker. The mirror copies each worker's own figures into
    metrics the merge understands: memory, fds and start time as per-worker gauges (``pid``
    label, gone when the worker is), CPU seconds as a counter summed over the host's workers.
    Refreshed at every cycle end and every scrape this worker answers.
    """

    def __init__(self) -> None:
        self._source = ProcessCollector(registry=None)
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, tuple[Counter, list[float]]] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        with self._lock:
            for family in self._source.collect():
                for sample in family.samples:
                    if family.type == "counter":
                        self._add(family.name, family.documentation, sample.value)
                    elif family.type == "gauge":
                        self._set(sample.name, family.documentation, sample.value)

    def _set(self, name: str, help: str, value: float) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = Gauge(
                name, help, registry=None, multiprocess_mode="liveall"
            )
        gauge.set(value)

    def _add(self, name: str, help: str, total: float) -> None:
        entry = self._counters.get(name)
        if entry is None:
            entry = self._counters[name] = (Counter(name, help, registry=None), [0.0])
        counter, last = entry
        if total > last[0]:
            counter.inc(total - last[0])
            last[0] = total


_mirrors: dict[int, ProcessMirror] = {}


def process_mirror() -> ProcessMirror:
    """The one mirror of this process (two would each add the CPU seconds)."""
    with _prepared_lock:
        pid = os.getpid()
        if pid not in _mirrors:
            _mirrors[pid] = ProcessMirror()
        return _mirrors[pid]
