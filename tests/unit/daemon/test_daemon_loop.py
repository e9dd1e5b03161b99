"""The cycle and its schedule, with an injected clock, random source and sleep."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client.parser import text_string_to_metric_families

from alliance_fhir.api import MonitorResult
from alliance_fhir.config import Settings
from alliance_fhir.daemon.inbox import Inbox
from alliance_fhir.daemon.loop import (
    Backoff,
    CycleContext,
    Daemon,
    DaemonOptions,
    Step,
    default_steps,
    jittered,
    monitoring_step,
)
from alliance_fhir.daemon.metrics import DaemonMetrics
from alliance_fhir.exceptions import FatalError, RetriableError
from alliance_fhir.sync.engine import SyncResult
from alliance_fhir.sync.state import StateStore


def series(daemon: Daemon) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The daemon's /metrics as a dashboard reads it: (series, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(daemon.metrics.render())
        for s in family.samples
    }


def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    return series(daemon).get((name, frozenset(labels.items())))


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(1.0, 10.0, jitter=0.1, rng=lambda: 0.0)
    assert [backoff.failure() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.failure() == 1


def test_backoff_jitter_only_shortens_so_the_cap_holds() -> None:
    backoff = Backoff(1.0, 10.0, jitter=0.2, rng=lambda: 1.0)
    delays = [backoff.failure() for _ in range(6)]
    assert delays == pytest.approx([0.8, 1.6, 3.2, 6.4, 8.0, 8.0])
    assert backoff.ceiling(1000) == 10  # no overflow after a very long outage


def test_backoff_respects_retry_after_within_the_cap() -> None:
    backoff = Backoff(1.0, 10.0, rng=lambda: 0.0)
    assert backoff.failure(retry_after=3.0) == 3.0
    assert backoff.failure(retry_after=600.0) == 10.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(0, 1)
    with pytest.raises(ValueError, match="base"):
        Backoff(5, 1)


def test_interval_jitter_spreads_both_ways() -> None:
    assert jittered(100, 0.1, lambda: 0.0) == pytest.approx(90)
    assert jittered(100, 0.1, lambda: 1.0) == pytest.approx(110)
    assert jittered(100, 0.0, lambda: 0.3) == pytest.approx(100)


def test_options_derive_from_settings() -> None:
    s = Settings(interval_seconds=0.5)
    opts = DaemonOptions()
    assert opts.base(s) == 0.5
    assert opts.cap(s) == 300
    assert opts.window(s) == 60
    assert DaemonOptions(backoff_max=2).cap(Settings(interval_seconds=600)) == 5.0  # >= base


class FakeApi:
    """The API as the daemon sees it: settings, a state store, and ``monitor()``, which
    returns the queued results in turn."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = StateStore(settings.state_path)
        self.monitor_results: list[MonitorResult] = []
        self.monitor_calls = 0

    def monitor(self) -> MonitorResult:
        result = self.monitor_results[self.monitor_calls]
        self.monitor_calls += 1
        return result


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeApi]:
    fake = FakeApi(
        Settings(interval_seconds=60, interval_jitter=0.0, state_path=tmp_path / "s.sqlite3")
    )
    yield fake
    fake.store.close()


def make_daemon(
    api: FakeApi,
    steps: list[Step],
    *,
    cycles: int,
    options: DaemonOptions | None = None,
) -> tuple[Daemon, list[float]]:
    """A daemon whose sleeps are recorded instead of slept; it stops after ``cycles``."""
    waits: list[float] = []
    holder: dict[str, Daemon] = {}

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        if len(waits) >= cycles:
            holder["d"].request_stop()
            return True
        return False

    daemon = Daemon(
        api,  # type: ignore[arg-type]
        options or DaemonOptions(backoff_base=1.0, backoff_max=8.0),
        steps=steps,
        metrics=DaemonMetrics(ready_window=600),
        rng=lambda: 0.0,
        wait=wait,
    )
    holder["d"] = daemon
    return daemon, waits


def recording(name: str, log: list[str], counts: Mapping[str, int] | None = None) -> Step:
    def run(ctx: CycleContext) -> Mapping[str, int]:
        log.append(name)
        return counts or {}

    return Step(name, run)


def flaky(name: str, log: list[str], failures: int, error: Exception) -> Step:
    calls = {"n": 0}

    def run(ctx: CycleContext) -> Mapping[str, int]:
        calls["n"] += 1
        log.append(name)
        if calls["n"] <= failures:
            raise error
        return {}

    return Step(name, run)


def test_server_down_backs_off_exponentially_then_recovers(api: FakeApi) -> None:
    ran: list[str] = []
    steps = [
        flaky("probe", ran, 5, RetriableError("GET /metadata: ConnectError")),
        recording("publish", ran, {"created": 3}),
    ]
    daemon, waits = make_daemon(api, steps, cycles=7)
    assert daemon.run_forever() == 0
    # 1, 2, 4, 8, 8 (capped) while down, then the normal interval (jitter 0 here)
    assert waits == [1, 2, 4, 8, 8, 60, 60]
    assert ran.count("publish") == 2  # skipped while the server was down
    assert metric(daemon, "alliance_fhir_errors_total", step="probe") == 5
    assert metric(daemon, "alliance_fhir_resources_pushed_total", operation="created") == 6
    assert metric(daemon, "alliance_fhir_cycles_total", outcome="failed") == 5
    assert daemon.metrics.last_success.get() > 0
    assert daemon.metrics.backoff.get() == 0


def test_fatal_server_errors_back_off_too(api: FakeApi) -> None:
    steps = [flaky("probe", [], 2, FatalError("GET /metadata -> 401", status=401))]
    daemon, waits = make_daemon(api, steps, cycles=3)
    daemon.run_forever()
    assert waits == [1, 2, 60]


def test_a_failing_step_does_not_stop_the_others_or_the_daemon(api: FakeApi) -> None:
    ran: list[str] = []
    steps = [
        flaky("monitoring", ran, 1, ValueError("bug")),
        recording("inbox", ran, {"files_processed": 2}),
    ]
    daemon, waits = make_daemon(api, steps, cycles=2)
    assert daemon.run_forever() == 0
    assert ran == ["monitoring", "inbox", "monitoring", "inbox"]
    assert waits == [60, 60]  # not a server outage: no back-off
    assert metric(daemon, "alliance_fhir_errors_total", step="monitoring") == 1
    assert metric(daemon, "alliance_fhir_inbox_files_total", outcome="processed") == 4


def test_stop_request_is_honoured_between_steps(api: FakeApi) -> None:
    ran: list[str] = []
    holder: dict[str, Daemon] = {}

    def stopper(ctx: CycleContext) -> Mapping[str, int]:
        ran.append("first")
        assert not ctx.stopping()
        holder["d"].request_stop()
        assert ctx.stopping()
        return {}

    daemon, waits = make_daemon(api, [Step("first", stopper), recording("second", ran)], cycles=9)
    holder["d"] = daemon
    assert daemon.run_forever() == 0
    assert ran == ["first"]
    assert waits == []  # no sleep after a stop request


def test_once_exit_code_says_whether_the_cycle_succeeded(api: FakeApi) -> None:
    ok, _ = make_daemon(api, [recording("a", [])], cycles=1, options=DaemonOptions(once=True))
    assert ok.run_forever() == 0
    bad, _ = make_daemon(
        api,
        [flaky("a", [], 1, RetriableError("down"))],
        cycles=1,
        options=DaemonOptions(once=True),
    )
    assert bad.run_forever() == 1


@pytest.mark.parametrize("key", ["files_failed", "rejected", "conflict"])
def test_once_exits_1_when_the_cycle_left_work_for_a_person(api: FakeApi, key: str) -> None:
    """A file moved to failed/ (or a rejected/conflicting record) is not a success for a
    scheduler running ``--once``, even though every step ran."""
    daemon, _ = make_daemon(
        api,
        [recording("push", [], {key: 1, "created": 3})],
        cycles=1,
        options=DaemonOptions(once=True),
    )
    assert daemon.run_forever() == 1


def test_monitoring_step_runs_the_api_monitor_every_cycle(api: FakeApi) -> None:
    api.monitor_results = [MonitorResult(pulled=4, alerts=Counter(new=1))] * 2
    daemon, waits = make_daemon(api, [Step("monitoring", monitoring_step)], cycles=2)
    daemon.run_forever()
    assert api.monitor_calls == 2
    assert waits == [60, 60]
    assert metric(daemon, "alliance_fhir_resources_pulled_total") == 8
    assert metric(daemon, "alliance_fhir_cycles_total", outcome="ok") == 2
    assert not [k for k in series(daemon) if k[0] == "alliance_fhir_errors_total"]


def test_monitoring_counts_are_the_runs_numbers_alerts_and_sync_summary(api: FakeApi) -> None:
    sync = SyncResult(run_id="r", counts=Counter(created=1, unchanged=2))
    api.monitor_results = [
        MonitorResult(
            pulled=5,
            external=1,
            not_scored=["QuestionnaireResponse/9 (k): q1: no answer"],
            alerts=Counter(new=1, unchanged=3),
            sync=sync,
            watermark="2024-02-19T10:00:00Z",
        )
    ]
    ctx = CycleContext(api=cast(Any, api), settings=api.settings, stopping=lambda: False)
    assert monitoring_step(ctx) == {
        "pulled": 5,
        "external": 1,
        "alerts_new": 1,
        "alerts_unchanged": 3,
        "created": 1,
        "updated": 0,
        "unchanged": 2,
        "conflict": 0,
        "rejected": 0,
    }


def test_monitoring_is_a_default_step_unless_switched_off(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox")
    names = [s.name for s in default_steps(DaemonOptions(), inbox)]
    assert names == ["probe", "publish", "inbox", "configured", "monitoring"]
    off = default_steps(DaemonOptions(monitoring=False), inbox)
    assert "monitoring" not in [s.name for s in off]


def test_sleeping_is_an_event_wait_not_a_busy_loop(api: FakeApi) -> None:
    """The default wait is the stop event's wait: a stop request ends it at once."""
    import threading
    import time

    daemon = Daemon(
        api,  # type: ignore[arg-type]
        DaemonOptions(),
        steps=[],
        metrics=DaemonMetrics(ready_window=60),
    )
    threading.Timer(0.2, daemon.request_stop).start()
    started = time.monotonic()
    assert daemon.run_forever() == 0
    assert time.monotonic() - started < 5  # interval is 60 s: the stop ended the sleep


def test_monitor_result_with_failures_marks_the_step_failed_but_keeps_counts(
    api: FakeApi,
) -> None:
    api.monitor_results = [
        MonitorResult(
            pulled=3,
            alerts=Counter(new=2),
            sync=SyncResult(run_id="r", counts=Counter(created=4)),
            failures=["Patient/1: FatalError"],
        )
    ]
    daemon, waits = make_daemon(api, [Step("monitoring", monitoring_step)], cycles=1)
    daemon.run_forever()
    assert waits == [60]  # a failed step, not an outage: no back-off
    assert metric(daemon, "alliance_fhir_errors_total", step="monitoring") == 1
    assert metric(daemon, "alliance_fhir_resources_pulled_total") == 3
    assert metric(daemon, "alliance_fhir_resources_pushed_total", operation="created") == 4
    assert metric(daemon, "alliance_fhir_cycles_total", outcome="failed") == 1


def test_monitor_run_with_a_refused_score_write_fails_the_step(api: FakeApi) -> None:
    refused = SyncResult(run_id="r", counts=Counter(rejected=1), failures=["score ext-7"])
    api.monitor_results = [MonitorResult(pulled=1, external=1, sync=refused)]
    daemon, _ = make_daemon(
        api, [Step("monitoring", monitoring_step)], cycles=1, options=DaemonOptions(once=True)
    )
    assert daemon.run_forever() == 1
    assert metric(daemon, "alliance_fhir_errors_total", step="monitoring") == 1
    assert metric(daemon, "alliance_fhir_rejected_total") == 1
