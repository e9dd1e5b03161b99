"""``status`` on a PostgreSQL store several daemons share: the work queue and the live
workers (counts, host and pid; no PHI), and nothing new where no queue exists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import Run

from alliance_fhir.sync.state import open_store, open_work_queue
from pgkit import Cluster


@pytest.fixture
def schema(postgres: Cluster) -> Iterator[str]:
    name = postgres.new_schema()
    yield name
    postgres.drop_schema(name)


def test_status_shows_the_work_queue_and_live_workers(
    run: Run, postgres: Cluster, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.schema_url(schema)
    open_store(url, password=postgres.password).close()
    queue = open_work_queue(url, password=postgres.password, owner="host-a:4242:abcdef")
    since = queue.now()
    queue.offer("source", [("source:1", "f"), ("source:2", "f"), ("source:3", "f")])
    queue.heartbeat(lease_seconds=60)
    held = queue.claim("source", lease_seconds=60, since=since)
    assert held is not None
    done = queue.claim("source", lease_seconds=60, since=since)
    assert done is not None
    assert queue.done(done)
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_URL", url)
    assert postgres.password is not None
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PASSWORD", postgres.password)

    result = run("status")
    queue.close()

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "work queue: 1 pending, 1 leased, 1 done" in lines
    assert "workers: 1 live" in lines
    (worker,) = [line for line in lines if line.startswith("  worker ")]
    assert worker.startswith("  worker host-a:4242:abcdef (running): 1 leases held, heartbeat ")


def test_status_without_a_queue_prints_no_queue_lines(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PATH", str(tmp_path / "state.sqlite3"))

    result = run("status")

    assert result.code == 0, result.err
    assert "work queue" not in result.out
    assert "workers:" not in result.out
