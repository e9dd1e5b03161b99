"""Alerts on a server that takes no Flag (Task only) or no Task either (report only), issue
#13 item 6: raised once, changed, closed like the pair's Task, and said once per run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from monitoringkit import default_rules
from test_monitoring_service import NOW, FakeServer, _falling, _qr

from alliance_fhir.app.monitor import RECOVERED_REASON, Monitor
from alliance_fhir.config import Settings
from alliance_fhir.fhir import WriteResult
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.state import StateStore


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def _monitor(server: FakeServer, tmp_path: Path, resources: str) -> Iterator[Monitor]:
    settings = Settings(
        server_url="http://fhir.test/fhir",
        state_path=tmp_path / "s.sqlite3",
        alert_resources=resources,
    )
    with StateStore(settings.state_path) as store:
        yield Monitor(
            cast(Any, server),
            store,
            load_library(),
            settings,
            list(default_rules()),
            now=lambda: NOW,
        )


@pytest.fixture
def task_only(server: FakeServer, tmp_path: Path) -> Iterator[Monitor]:
    yield from _monitor(server, tmp_path, "task")


@pytest.fixture
def report_only(server: FakeServer, tmp_path: Path) -> Iterator[Monitor]:
    yield from _monitor(server, tmp_path, "report")


def test_task_only_alerts_carry_the_flags_code_and_text_and_are_raised_once(
    server: FakeServer, task_only: Monitor
) -> None:
    _falling(server)
    first = task_only.run()
    second = task_only.run()
    assert first.alerts == {"new": 2}
    assert first.alert_note == "Task only (alert_resources = task)"
    assert second.alerts == {"unchanged": 2}
    assert server.all("Flag") == []
    tasks = server.all("Task")
    assert len(tasks) == 2
    for task in tasks:
        reason = task["reasonCode"]
        assert reason["text"] == task["description"]
        assert reason["coding"] == task["code"]["coding"]
        assert reason["coding"][0]["code"].startswith("alliance-rule-")
        assert task["priority"] in ("routine", "urgent", "asap")


def test_task_only_alerts_change_and_close_without_a_flag(
    server: FakeServer, task_only: Monitor
) -> None:
    _falling(server)
    task_only.run()
    server.add(_qr("p1", NOW - timedelta(days=2), [5.0] * 4, "k8"))
    changed = task_only.run()
    assert changed.alerts["changed"] == 2
    for task in server.all("Task"):
        assert task["reasonCode"]["text"] == task["description"]
    server.add(_qr("p1", NOW - timedelta(days=1), [9.5] * 4, "k9"))
    closed = task_only.run()
    assert closed.alerts["recovered"] == 2
    assert server.all("Flag") == []
    for task in server.all("Task"):
        assert task["status"] == "completed"
        assert task["statusReason"]["text"] == RECOVERED_REASON


def test_report_only_alerts_write_and_read_nothing(
    server: FakeServer, report_only: Monitor
) -> None:
    _falling(server)
    first = report_only.run()
    again = report_only.run()
    assert first.alerts == again.alerts == {"reported": 2}
    assert (
        first.alert_note
        == "not written; reported in the monitor's output only (alert_resources = report)"
    )
    assert server.all("Flag") == server.all("Task") == []
    assert [len(p.triggers) for p in first.patients] == [2]


class NoTransactions(FakeServer):
    """A server that takes no transaction: conditional creates one by one."""

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("a transaction was sent to a server that takes none")

    def create(self, resource: Mapping[str, Any], *, if_none_exist: str) -> WriteResult:
        query = dict(p.split("=", 1) for p in if_none_exist.split("&"))
        if list(self.search(resource["resourceType"], query)):
            return WriteResult(200, None, None, None, None, None, None)
        rid = self.add(dict(resource))
        self.writes.append(f"POST {resource['resourceType']}")
        return WriteResult(201, f"{resource['resourceType']}/{rid}", rid, "1", None, None, None)


def test_alerts_on_a_server_without_transactions_are_single_conditional_creates(
    tmp_path: Path,
) -> None:
    server = NoTransactions()
    settings = Settings(
        server_url="http://fhir.test/fhir", state_path=tmp_path / "s.sqlite3", write_mode="single"
    )
    _falling(server)
    with StateStore(settings.state_path) as store:
        monitor = Monitor(
            cast(Any, server),
            store,
            load_library(),
            settings,
            list(default_rules()),
            now=lambda: NOW,
        )
        first = monitor.run()
        second = monitor.run()
    assert first.alerts == {"new": 2}
    assert second.alerts == {"unchanged": 2}
    assert sorted(server.writes) == ["POST Flag", "POST Flag", "POST Task", "POST Task"]
