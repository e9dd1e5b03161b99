"""The daemon's cycle and its schedule.

One cycle runs a list of steps in order (default: ``probe`` the server, ``publish`` changed
instruments, ingest the ``inbox``, push the ``configured`` assessment and goal paths, run
``monitoring`` unless switched off). Between cycles it sleeps the configured
interval with jitter; after a cycle that could not reach the server it backs off
exponentially up to a cap instead, and returns to the normal interval after the first good
cycle. Sleeps wait on an event, so a stop request ends them at once: there is no busy loop.

Failure handling, by what the failure means:

* ``RetriableError`` (down, overloaded, timed out; the client already retried within its
  deadline), ``FatalError`` (auth, a wrong base URL) and ``StateError``: the rest of the
  cycle is skipped (every step would fail the same way) and the next cycle is backed off.
  Nothing is lost: inbox files stay in the inbox, state rows are written only from what the
  server answered.
* Any other exception in a step is logged with its type and the cycle goes on with the next
  step; the cycle counts as failed. The daemon itself never dies of a step's error.

A stop request (SIGTERM/SIGINT) is honoured between steps and between inbox files: the batch
in flight finishes, then the loop ends. A second signal abandons it (every write is
conditional or ``If-Match``, so a restart continues exactly once).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alliance_fhir.exceptions import (
    FatalError,
    RetriableError,
    StateError,
)
from alliance_fhir.log import get_logger

if TYPE_CHECKING:
    from alliance_fhir.api import AllianceFhir, MonitorResult, Records
    from alliance_fhir.config import Settings
    from alliance_fhir.daemon.inbox import Inbox
    from alliance_fhir.daemon.metrics import DaemonMetrics

log = get_logger("alliance_fhir.daemon")


@dataclass(frozen=True)
class DaemonOptions:
    """Knobs of the daemon that are not in :class:`Settings` (CLI flags).

    ``None`` means "derive from the settings": ``backoff_base`` = min(interval, 5 s),
    ``backoff_max`` = max(interval, 300 s), ``ready_window`` = max(3 x interval, 60 s).
    """

    once: bool = False
    labels_only: bool = False
    settle_seconds: float = 2.0
    backoff_base: float | None = None
    backoff_max: float | None = None
    ready_window: float | None = None
    metrics: bool = True
    monitoring: bool = True

    def base(self, settings: Settings) -> float:
        return (
            self.backoff_base
            if self.backoff_base is not None
            else min(settings.interval_seconds, 5.0)
        )

    def cap(self, settings: Settings) -> float:
        cap = (
            self.backoff_max
            if self.backoff_max is not None
            else max(settings.interval_seconds, 300.0)
        )
        return max(cap, self.base(settings))

    def window(self, settings: Settings) -> float:
        if self.ready_window is not None:
            return self.ready_window
        return max(3 * settings.interval_seconds, 60.0)


def jittered(interval: float, jitter: float, rng: Callable[[], float] = random.random) -> float:
    """``interval`` spread uniformly by +-``jitter`` (a fraction), so many daemons started
    together do not hit the server in step."""
    return max(0.0, interval * (1.0 + jitter * (2.0 * rng() - 1.0)))


class Backoff:
    """Exponential back-off between failed cycles: ``base * 2**(n-1)`` capped at ``cap``,
    never shorter than a server's ``Retry-After`` (itself capped), with downward jitter so the
    cap is a true upper bound."""

    def __init__(
        self,
        base: float,
        cap: float,
        *,
        jitter: float = 0.1,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("Backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.rng = rng
        self.failures = 0

    def ceiling(self, failures: int) -> float:
        """The un-jittered delay after ``failures`` failed cycles in a row."""
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * 2.0 ** min(failures - 1, 62))

    def failure(self, retry_after: float | None = None) -> float:
        """Record one more failed cycle; the delay before the next attempt."""
        self.failures += 1
        delay = self.ceiling(self.failures) * (1.0 - self.jitter * self.rng())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay

    def reset(self) -> None:
        self.failures = 0


@dataclass
class CycleContext:
    """What a step gets: the API facade, the settings, and a way to see a stop request."""

    api: AllianceFhir
    settings: Settings
    stopping: Callable[[], bool]


StepFn = Callable[[CycleContext], Mapping[str, int]]


@dataclass(frozen=True)
class Step:
    """One named part of a cycle; ``run`` returns counts (``created``, ``pulled``, ...)."""

    name: str
    run: StepFn


@dataclass
class StepOutcome:
    name: str
    ok: bool
    counts: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0


@dataclass
class CycleResult:
    """One cycle: per-step outcomes, whether the server answered, what to do next."""

    steps: list[StepOutcome] = field(default_factory=list)
    server_down: bool = False
    retry_after: float | None = None
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.server_down and all(s.ok for s in self.steps)

    def total(self, key: str) -> int:
        return sum(s.counts.get(key, 0) for s in self.steps)

    @property
    def clean(self) -> bool:
        """Succeeded *and* nothing needs a person: no file went to ``failed/`` and no record
        was rejected or left in conflict. What ``--once`` reports, like ``sync``'s exit 1."""
        return self.ok and not any(
            self.total(key) for key in ("files_failed", "rejected", "conflict")
        )


# The default steps


def probe_step(ctx: CycleContext) -> Mapping[str, int]:
    """One small GET /metadata: is the server there at all (and tells readiness it
    answered)."""
    ctx.api.probe()
    return {}


def push_if_changed(ctx: CycleContext, records: Records, command: str) -> Mapping[str, int]:
    """Plan first and send only when something changed: an idle cycle costs no request and
    adds no run to the state store."""
    api = ctx.api
    if records.problems:
        log.warning(
            "daemon.input_problems",
            command=command,
            count=len(records.problems),
            first=[f"{p.location}:{p.line or ''} [{p.field}]" for p in records.problems[:5]],
        )
    plan = api.engine().plan(records.desired)
    if not plan.writes:
        counts = {k: v for k, v in plan.counts().items() if k in ("unchanged", "conflict")}
        if records.unchanged:  # records of source files skipped as unchanged
            counts["unchanged"] = counts.get("unchanged", 0) + records.unchanged
        return counts
    report = api.run(records, command=command)
    return report.result.summary() if report.result is not None else {}


def publish_step(labels_only: bool) -> StepFn:
    def run(ctx: CycleContext) -> Mapping[str, int]:
        records = ctx.api.instrument_records(labels_only=labels_only)
        for skipped in records.skipped:
            log.debug("daemon.publish_skipped", reason=skipped)
        return push_if_changed(ctx, records, "publish")

    return run


def configured_step(ctx: CycleContext) -> Mapping[str, int]:
    """The ``assessments`` and ``goals`` paths of the configuration (like ``sync``)."""
    counts: dict[str, int] = {}
    api, settings = ctx.api, ctx.settings
    if settings.assessments:
        records = api.assessment_records(settings.assessments, fingerprints=True)
        _add(counts, push_if_changed(ctx, records, "push"))
    if settings.goals and not ctx.stopping():
        records = api.goal_records(settings.goals, sources=api.source_index())
        _add(counts, push_if_changed(ctx, records, "push goals"))
    return counts


def inbox_step(inbox: Inbox) -> StepFn:
    def run(ctx: CycleContext) -> Mapping[str, int]:
        from alliance_fhir.daemon.inbox import summarize

        results = []
        for path in inbox.scan():
            if ctx.stopping():
                break
            results.append(inbox.process(ctx.api, path))
        return summarize(results)

    return run


def _add(total: dict[str, int], more: Mapping[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + int(value)


class StepIncomplete(Exception):
    """A step ran but reports failures of its own (e.g. a monitoring run with failed
    patients): the counts still count, the step and the cycle are marked failed."""

    def __init__(self, message: str, counts: Mapping[str, int]) -> None:
        super().__init__(message)
        self.counts = dict(counts)


def monitor_counts(result: MonitorResult) -> dict[str, int]:
    """A monitoring run as cycle counts: ``pulled``, ``external``, ``alerts_<state>`` and the
    sync summary of the score Observations written (``created``, ``updated``, ...)."""
    counts = {"pulled": result.pulled, "external": result.external}
    counts.update({f"alerts_{k}": v for k, v in result.alerts.items()})
    if result.sync is not None:
        for key, value in result.sync.summary().items():
            counts[key] = counts.get(key, 0) + value
    return counts


def monitoring_step(ctx: CycleContext) -> Mapping[str, int]:
    """One monitor run through the API; a ``pulled`` count feeds the metrics, a run whose
    ``ok`` is False (failed patients, refused writes) marks the step failed."""
    result = ctx.api.monitor()
    counts = monitor_counts(result)
    if not result.ok:
        raise StepIncomplete("the monitoring run reported failures", counts)
    return counts


def default_steps(options: DaemonOptions, inbox: Inbox) -> list[Step]:
    steps = [
        Step("probe", probe_step),
        Step("publish", publish_step(options.labels_only)),
        Step("inbox", inbox_step(inbox)),
        Step("configured", configured_step),
    ]
    if options.monitoring:
        steps.append(Step("monitoring", monitoring_step))
    return steps


class Daemon:
    """The loop: cycles, sleeps, back-off, stop requests, metrics updates."""

    def __init__(
        self,
        api: AllianceFhir,
        options: DaemonOptions,
        *,
        steps: Sequence[Step],
        metrics: DaemonMetrics,
        inbox: Inbox | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.api = api
        self.settings = api.settings
        self.options = options
        self.steps = list(steps)
        self.metrics = metrics
        self.inbox = inbox
        self.clock = clock
        self.rng = rng
        self._stop = threading.Event()
        self._wait = wait if wait is not None else self._stop.wait
        self.backoff = Backoff(
            options.base(self.settings),
            options.cap(self.settings),
            jitter=min(self.settings.interval_jitter, 0.5),
            rng=rng,
        )
        self.cycles = 0

    # Stopping

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        self._stop.set()

    def request_stop_from_signal(self) -> None:
        """Safe inside a signal handler: the event is set from a helper thread, because
        the interrupted main thread may hold the event's lock at that moment."""
        threading.Thread(target=self._stop.set, name="alliance-fhir-stop", daemon=True).start()

    # One cycle

    def run_cycle(self) -> CycleResult:
        started = self.clock()
        result = CycleResult()
        ctx = CycleContext(self.api, self.settings, lambda: self._stop.is_set())
        log.info("daemon.cycle_start", cycle=self.cycles + 1)
        for step in self.steps:
            if self.stopping:
                result.interrupted = True
                break
            outcome = StepOutcome(step.name, ok=True)
            result.steps.append(outcome)
            step_started = self.clock()
            try:
                outcome.counts = dict(step.run(ctx))
            except StepIncomplete as exc:
                outcome.ok = False
                outcome.counts = exc.counts
                outcome.error = str(exc)
                self.metrics.errors.inc(step=step.name)
                log.warning("daemon.step_incomplete", step=step.name, reason=str(exc))
            except (RetriableError, FatalError, StateError) as exc:
                outcome.ok = False
                outcome.error = type(exc).__name__
                result.server_down = True
                if isinstance(exc, RetriableError):
                    result.retry_after = exc.retry_after
                self.metrics.errors.inc(step=step.name)
                log.warning(
                    "daemon.step_failed",
                    step=step.name,
                    error=exc,
                    status=getattr(exc, "status", None),
                    action="skipping the rest of this cycle; backing off",
                )
                break
            except Exception as exc:  # a bug in a step must not end the daemon
                outcome.ok = False
                outcome.error = type(exc).__name__
                self.metrics.errors.inc(step=step.name)
                log.error("daemon.step_failed", step=step.name, error=exc, exc_info=True)
            finally:
                outcome.seconds = self.clock() - step_started
        result.seconds = self.clock() - started
        self.cycles += 1
        self._record(result)
        return result

    def _record(self, result: CycleResult) -> None:
        m = self.metrics
        for op in ("created", "updated"):
            if n := result.total(op):
                m.pushed.inc(n, operation=op)
        if n := result.total("pulled"):
            m.pulled.inc(n)
        if n := result.total("conflict"):
            m.conflicts_seen.inc(n)
        if n := result.total("rejected"):
            m.rejected.inc(n)
        for outcome in ("processed", "failed"):
            if n := result.total(f"files_{outcome}"):
                m.inbox_files.inc(n, outcome=outcome)
        probed = any(s.name == "probe" and s.ok for s in result.steps)
        server_ok: bool | None = False if result.server_down else (True if probed else None)
        try:
            store = self.api.store
            m.conflicts.set(store.counts_by_status().get("conflict", 0))
            m.dead_letters.set(len(store.open_dead_letters()))
        except Exception as exc:  # metrics must never end the loop
            log.warning("daemon.metrics_state_unreadable", error=type(exc).__name__)
        if self.inbox is not None:
            m.inbox_depth.set(self.inbox.depth())
        m.cycle_finished(ok=result.ok, duration=result.seconds, server_ok=server_ok)
        summary = {
            k: result.total(k)
            for k in ("created", "updated", "unchanged", "conflict", "rejected", "pulled")
            if result.total(k)
        }
        log.info(
            "daemon.cycle_done",
            cycle=self.cycles,
            ok=result.ok,
            seconds=round(result.seconds, 3),
            failed_steps=[s.name for s in result.steps if not s.ok],
            interrupted=result.interrupted,
            **summary,
        )

    # The loop

    def next_delay(self, result: CycleResult) -> float:
        if result.server_down:
            delay = self.backoff.failure(result.retry_after)
            self.metrics.backoff.set(delay)
            self.metrics.consecutive_failures.set(self.backoff.failures)
            return delay
        self.backoff.reset()
        self.metrics.backoff.set(0)
        self.metrics.consecutive_failures.set(0)
        return jittered(self.settings.interval_seconds, self.settings.interval_jitter, self.rng)

    def run_forever(self) -> int:
        """Cycle until stopped; 0 on a requested stop. With ``once``: one cycle, 0 if it
        succeeded and left nothing for a person (see ``CycleResult.clean``), else 1."""
        log.info(
            "daemon.started",
            interval_s=self.settings.interval_seconds,
            jitter=self.settings.interval_jitter,
            steps=[s.name for s in self.steps],
        )
        while True:
            result = self.run_cycle()
            if self.options.once:
                return 0 if result.clean else 1
            if self.stopping:
                break
            delay = self.next_delay(result)
            log.info(
                "daemon.sleep",
                seconds=round(delay, 3),
                backoff=result.server_down,
                failures=self.backoff.failures,
            )
            if self._wait(delay) or self.stopping:
                break
        log.info("daemon.stopped", cycles=self.cycles)
        return 0
