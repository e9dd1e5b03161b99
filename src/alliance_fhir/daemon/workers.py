"""One of many daemons on a shared (PostgreSQL) state store: its leases and its steps.

With a SQLite store one daemon runs (the lock file) and the steps of ``daemon.loop`` run as
they are. With PostgreSQL any number of daemons run, on one machine or many, and the work
queue (``api.workers``; the table and why it is ours in ``sync.state.work``) coordinates
them: each cycle a worker offers the items it sees (the publish of instruments, each
configured source file, each file of its inbox, the monitor's pull) and then claims pending
ones one at a time, each under a lease, until none is left; another worker skips what is
leased or already done at the same fingerprint. A record is written by one worker at a time
because the file it comes from is.

* The **heartbeat** thread renews the leases held every third of ``lease_seconds`` and says
  the worker is alive (``status`` lists live workers). A lease another worker took over
  (this one stalled past its lease) is counted as lost; the write in flight finishes (every
  write is conditional, so a second writer does not duplicate) and the item is not marked.
* **Drain** (SIGTERM/SIGINT): no more claims; the item in hand finishes within
  ``drain_seconds`` (past that, the second-signal path abandons it); every lease held is
  released (``lease_until = now``) so another worker takes it at once; exit 0.
* **SIGKILL** or a crash: nothing is released; the lease simply runs out and another worker
  claims the item then.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alliance_fhir.api.workers import (
    INBOX,
    MONITOR,
    PUBLISH,
    SOURCE,
    Claim,
    WorkQueue,
    cycle_items,
    inbox_work,
    monitor_item,
)
from alliance_fhir.daemon.loop import (
    CycleContext,
    DaemonOptions,
    Step,
    StepFn,
    monitoring_step,
    probe_step,
    publish_step,
    push_if_changed,
)
from alliance_fhir.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable

    from alliance_fhir.api.workers import WorkItem
    from alliance_fhir.daemon.inbox import Inbox
    from alliance_fhir.daemon.metrics import DaemonMetrics

    ItemOf = Callable[[CycleContext], WorkItem]

log = get_logger("alliance_fhir.daemon")

#: Items of sources not seen for this long are dropped from the queue (vanished files).
FORGET_AFTER = 86_400.0


@dataclass
class Job:
    """The item in hand; a step sets ``retry_after`` to give it back instead of marking it
    done (records the server refused: tried again later, as a lone daemon would)."""

    claim: Claim
    retry_after: float | None = None


class Leases:
    """This worker's side of the queue: claims, the heartbeat thread, done/release, figures."""

    def __init__(
        self,
        queue: WorkQueue,
        *,
        lease_seconds: float,
        retry_seconds: float,
        metrics: DaemonMetrics,
    ) -> None:
        self.queue = queue
        self.lease_seconds = lease_seconds
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self.state = "running"
        self._held: dict[str, Claim] = {}
        self._lost: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_forever, name="alliance-fhir-leases", daemon=True
        )

    @property
    def owner(self) -> str:
        return self.queue.owner

    def start(self) -> None:
        self.queue.heartbeat(lease_seconds=self.lease_seconds)
        self._thread.start()
        log.info("daemon.worker_started", worker=self.owner, lease_s=self.lease_seconds)

    def _beat_forever(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.beat()
            except Exception as exc:  # a failed heartbeat must not end the worker
                log.warning("daemon.heartbeat_failed", error=type(exc).__name__)

    def beat(self) -> None:
        """Renew the leases held; note the ones lost; say this worker is alive."""
        with self._lock:
            keys = list(self._held)
        lost = self.queue.renew(keys, lease_seconds=self.lease_seconds) if keys else []
        if lost:
            with self._lock:
                for key in lost:
                    self._held.pop(key, None)
                    self._lost.add(key)
                held = len(self._held)
            self.metrics.leases(held=held, claimed=0, lost=len(lost))
            log.warning("daemon.lease_lost", items=len(lost))
        self.queue.heartbeat(lease_seconds=self.lease_seconds, state=self.state)

    def claim(self, kind: str, *, since: float, key: str | None = None) -> Claim | None:
        found = self.queue.claim(kind, lease_seconds=self.lease_seconds, key=key, since=since)
        if found is not None:
            with self._lock:
                self._held[found.key] = found
                held = len(self._held)
            self.metrics.leases(held=held, claimed=1, lost=0)
        return found

    @contextmanager
    def working(self, claim: Claim) -> Iterator[Job]:
        """Hold ``claim`` while the block runs: marked done when it ends normally (unless it
        set ``retry_after``), given back at once when it raises."""
        job = Job(claim)
        finished = False
        try:
            yield job
            finished = True
        finally:
            self._settle(job, finished)

    def _settle(self, job: Job, finished: bool) -> None:
        key = job.claim.key
        with self._lock:
            self._held.pop(key, None)
            lost = key in self._lost
            self._lost.discard(key)
            held = len(self._held)
        try:
            if lost:
                pass  # another worker holds it now: leave its row alone
            elif finished and job.retry_after is None:
                lost = not self.queue.done(job.claim)
            else:
                retry = 0.0 if not finished else job.retry_after or 0.0
                lost = not self.queue.release(key, retry_after=retry)
        except Exception as exc:  # the store is down: the lease will run out by itself
            log.warning("daemon.lease_unsettled", error=type(exc).__name__)
        self.metrics.leases(held=held, claimed=0, lost=1 if lost else 0)

    def skip(self, claim: Claim) -> None:
        """A claimed item this worker does not know (another's source): back for later."""
        with self._lock:
            self._held.pop(claim.key, None)
            held = len(self._held)
        self.queue.release(claim.key, retry_after=self.lease_seconds)
        self.metrics.leases(held=held, claimed=0, lost=0)

    def figures(self) -> None:
        """The queue's counts into the metrics (after each cycle)."""
        counts = self.queue.counts()
        self.metrics.work_queue(pending=counts.pending, leased=counts.leased, done=counts.done)

    def stop(self) -> None:
        """The drain's end: stop the heartbeat, release every lease held, leave."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.lease_seconds)
        released = 0
        try:
            released = self.queue.release_all()
            self.queue.leave()
        except Exception as exc:  # the leases run out by themselves
            log.warning("daemon.leases_unreleased", error=type(exc).__name__)
        with self._lock:
            self._held.clear()
        self.metrics.leases(held=0, claimed=0, lost=0)
        log.info("daemon.worker_stopped", worker=self.owner, released=released)
        self.queue.close()


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + int(value)


def _singleton(leases: Leases, kind: str, inner: StepFn, item_of: ItemOf) -> StepFn:
    """A step that one worker at a time runs, once per fingerprint of its item."""

    def run(ctx: CycleContext) -> Mapping[str, int]:
        since = leases.queue.now()
        item = item_of(ctx)
        leases.queue.offer(kind, [(item.key, item.fingerprint)])
        claim = leases.claim(kind, since=since, key=item.key)
        if claim is None:
            return {}
        with leases.working(claim):
            return inner(ctx)

    return run


def sources_step(leases: Leases, labels_only: bool) -> StepFn:
    """The configured assessment and goal files, one leased file at a time."""

    def run(ctx: CycleContext) -> Mapping[str, int]:
        api = ctx.api
        since = leases.queue.now()
        items = {i.key: i for i in cycle_items(api, labels_only=labels_only).sources}
        leases.queue.offer(SOURCE, [(i.key, i.fingerprint) for i in items.values()])
        leases.queue.forget(SOURCE, unseen_for=FORGET_AFTER)
        counts: dict[str, int] = {}
        while not ctx.stopping():
            claim = leases.claim(SOURCE, since=since)
            if claim is None:
                break
            item = items.get(claim.key)
            if item is None or item.path is None:
                leases.skip(claim)
                continue
            with leases.working(claim) as job:
                if item.goals:
                    records = api.goal_records([item.path], sources=api.source_index())
                    got = push_if_changed(ctx, records, "push goals")
                else:
                    records = api.assessment_records(
                        [item.path], fingerprints=True, labels_only=labels_only
                    )
                    got = push_if_changed(ctx, records, "push")
                if got.get("rejected"):
                    job.retry_after = leases.retry_seconds
            _add(counts, got)
            counts["items_done"] = counts.get("items_done", 0) + 1
        return counts

    return run


def inbox_step(leases: Leases, inbox: Inbox) -> StepFn:
    """This host's inbox files, each taken by one worker of the host."""

    def run(ctx: CycleContext) -> Mapping[str, int]:
        from alliance_fhir.daemon.inbox import summarize

        since = leases.queue.now()
        items = inbox_work(ctx.api, inbox.scan())
        leases.queue.offer(INBOX, [(i.key, i.fingerprint) for i in items])
        leases.queue.forget(INBOX, unseen_for=FORGET_AFTER)
        results = []
        for item in items:
            if ctx.stopping():
                break
            claim = leases.claim(INBOX, since=since, key=item.key)
            if claim is None or item.path is None:
                continue
            with leases.working(claim):
                if item.path.exists():  # another worker of this host may have taken it
                    results.append(inbox.process(ctx.api, item.path))
        return summarize(results)

    return run


def worker_steps(options: DaemonOptions, inbox: Inbox, leases: Leases) -> list[Step]:
    """``default_steps`` for a worker among many: the same steps, each under leases."""
    labels_only = options.labels_only

    def publish_of(ctx: CycleContext) -> WorkItem:
        return cycle_items(ctx.api, labels_only=labels_only).publish

    def monitor_of(ctx: CycleContext) -> WorkItem:
        return monitor_item(leases.queue.now(), ctx.settings.interval_seconds)

    def queue_figures(_ctx: CycleContext) -> Mapping[str, int]:
        leases.figures()
        return {}

    steps = [
        Step("probe", probe_step),
        Step("publish", _singleton(leases, PUBLISH, publish_step(labels_only), publish_of)),
        Step("inbox", inbox_step(leases, inbox)),
        Step("configured", sources_step(leases, labels_only)),
    ]
    if options.monitoring:
        steps.append(Step("monitoring", _singleton(leases, MONITOR, monitoring_step, monitor_of)))
    steps.append(Step("work-queue", queue_figures))
    return steps
