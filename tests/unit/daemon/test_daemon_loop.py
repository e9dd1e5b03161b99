"""The cycle and its schedule, with an injected clock, random source and sleep."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.config import Settings
from alliance_fhir.daemon import loop
from alliance_fhir.daemon.loop import (
    Backoff,
    CycleContext,
    Daemon,
    DaemonOptions,
    Step,
    jittered,
    monitoring_step,
)
from alliance_fhir.daemon.metrics import DaemonMetrics
from alliance_fhir.exceptions import FatalError, RetriableError
from alliance_fhir.sync.state import StateStore


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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = StateStore(settings.state_path)


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
    values = daemon.metrics.registry.render()
    assert 'alliance_fhir_errors_total{step="probe"} 5' in values
    assert 'alliance_fhir_resources_pushed_total{operation="created"} 6' in values
    assert 'alliance_fhir_cycles_total{outcome="failed"} 5' in values
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
    text = daemon.metrics.registry.render()
    assert 'alliance_fhir_errors_total{step="monitoring"} 1' in text
    assert 'alliance_fhir_inbox_files_total{outcome="processed"} 4' in text


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


def test_monitoring_is_skipped_when_the_service_is_absent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "MONITORING_MODULE", "alliance_fhir.monitoring.no_such_service")
    assert monitoring_step() is None


def _fake_module(monkeypatch: pytest.MonkeyPatch, **attrs: Any) -> None:
    name = "alliance_fhir_test_fake_monitoring"
    module = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(loop, "MONITORING_MODULE", name)


def test_monitoring_module_without_monitor_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_module(monkeypatch)
    assert monitoring_step() is None


def test_monitoring_service_plugs_in_as_a_step(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []

    class Monitor:
        def __init__(self, given: object) -> None:
            built.append(given)

        def run_once(self) -> dict[str, Any]:
            return {"pulled": 4, "flags": 1, "note": "ignored"}

    _fake_module(monkeypatch, Monitor=Monitor)
    step = monitoring_step()
    assert step is not None
    assert step.name == "monitoring"
    daemon, _ = make_daemon(api, [step], cycles=2)
    daemon.run_forever()
    assert built == [api]  # built once, reused
    assert "alliance_fhir_resources_pulled_total 8" in daemon.metrics.registry.render()


def test_monitoring_result_object_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    class Result:
        def __init__(self) -> None:
            self.pulled = 2
            self.scored = 2

    class Monitor:
        @classmethod
        def from_api(cls, api: object) -> Monitor:
            return cls()

        def run(self) -> Result:
            return Result()

    _fake_module(monkeypatch, Monitor=Monitor)
    step = monitoring_step()
    assert step is not None
    ctx = CycleContext(api=object(), settings=Settings(), stopping=lambda: False)  # type: ignore[arg-type]
    assert step.run(ctx) == {"pulled": 2, "scored": 2}


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
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    from alliance_fhir.sync.engine import SyncResult

    class Result:
        def __init__(self) -> None:
            self.pulled = 3
            self.alerts: Counter[str] = Counter(new=2)
            self.sync = SyncResult(run_id="r", counts=Counter(created=4))
            self.failures = ["Patient/1: FatalError"]

        @property
        def ok(self) -> bool:
            return not self.failures

    class Monitor:
        def __init__(self, api: object) -> None:
            pass

        def run(self) -> Result:
            return Result()

    _fake_module(monkeypatch, Monitor=Monitor)
    step = monitoring_step()
    assert step is not None
    daemon, waits = make_daemon(api, [step], cycles=1)
    daemon.run_forever()
    assert waits == [60]  # a failed step, not an outage: no back-off
    text = daemon.metrics.registry.render()
    assert 'alliance_fhir_errors_total{step="monitoring"} 1' in text
    assert "alliance_fhir_resources_pulled_total 3" in text
    assert 'alliance_fhir_resources_pushed_total{operation="created"} 4' in text
    assert 'alliance_fhir_cycles_total{outcome="failed"} 1' in text
