"""The shared work queue (migration 5): claims, lease expiry, done marks and the drain, on
SQLite and on PostgreSQL (``state_target``), plus many concurrent claimers on PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families
from statekit import Target

from alliance_fhir.daemon.metrics import DaemonMetrics
from alliance_fhir.daemon.workers import Leases
from alliance_fhir.sync.state import WorkQueue, open_store, open_work_queue
from pgkit import Cluster


@pytest.fixture
def queues(state_target: Target) -> Iterator[list[WorkQueue]]:
    """Two workers' queues on one fresh store."""
    state_target.open().close()  # runs the migrations
    opened = [
        open_work_queue(state_target.url, password=state_target.password, owner=name)
        for name in ("worker-a", "worker-b")
    ]
    yield opened
    for q in opened:
        q.close()


ITEMS = [("source:1", "fp1"), ("source:2", "fp1"), ("source:3", "fp1")]


def test_each_item_goes_to_one_worker_and_a_done_item_is_skipped(
    queues: list[WorkQueue],
) -> None:
    a, b = queues
    since = a.now()
    for q in queues:  # both workers see the same sources
        assert q.offer("source", ITEMS) == 3
    first = a.claim("source", lease_seconds=30, since=since)
    second = b.claim("source", lease_seconds=30, since=since)
    third = a.claim("source", lease_seconds=30, since=since)
    assert first
    assert second
    assert third
    assert len({first.key, second.key, third.key}) == 3
    assert b.claim("source", lease_seconds=30, since=since) is None  # all leased
    assert a.counts().leased == 3
    assert a.done(first)
    assert b.done(second)
    assert not b.done(third)  # not b's lease
    assert a.release(third.key)
    assert a.counts() == type(a.counts())(pending=1, leased=0, done=2)
    # the next cycle: unchanged items stay done, a changed one is pending again
    since = b.now()
    b.offer("source", [(first.key, "fp1"), (second.key, "fp2"), (third.key, "fp1")])
    got = {b.claim("source", lease_seconds=30, since=since) for _ in range(3)}
    assert {c.key for c in got if c} == {second.key, third.key}


def test_an_expired_lease_is_claimed_by_another_worker_and_lost_by_its_holder(
    queues: list[WorkQueue],
) -> None:
    a, b = queues
    since = a.now()
    a.offer("source", ITEMS[:1])
    held = a.claim("source", lease_seconds=0.6, since=since)
    assert held is not None
    assert b.claim("source", lease_seconds=30, since=since) is None
    assert a.renew([held.key], lease_seconds=0.6) == []  # the heartbeat keeps it
    assert b.claim("source", lease_seconds=30, since=since) is None
    time.sleep(0.8)  # a stopped renewing (killed): the lease runs out
    taken = b.claim("source", lease_seconds=30, since=since)
    assert taken == held
    assert a.renew([held.key], lease_seconds=0.6) == [held.key]  # a learns it lost it
    assert not a.done(held)  # and cannot mark it
    assert b.done(taken)


def _sample(metrics: DaemonMetrics, name: str, labels: dict[str, str]) -> float:
    """One sample's value from the /metrics text, as a scraper reads it."""
    found = [
        sample.value
        for family in text_string_to_metric_families(metrics.render())
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_drain_releases_every_lease_at_once_and_the_worker_leaves(
    queues: list[WorkQueue],
) -> None:
    a, b = queues
    since = a.now()
    a.offer("source", ITEMS)
    a.heartbeat(lease_seconds=30)
    b.heartbeat(lease_seconds=30)
    metrics = DaemonMetrics(ready_window=60)
    leases = Leases(a, lease_seconds=30, retry_seconds=5, metrics=metrics)
    assert leases.claim("source", since=since)
    assert leases.claim("source", since=since)
    live = {w.worker_id: w for w in b.live_workers()}
    assert set(live) == {"worker-a", "worker-b"}
    assert live["worker-a"].held == 2
    me = {"worker": metrics.worker}
    assert _sample(metrics, "alliance_fhir_worker_leases_held", me) == 2
    leases.figures()
    assert _sample(metrics, "alliance_fhir_work_items", {"state": "leased"}) == 2
    assert _sample(metrics, "alliance_fhir_work_items", {"state": "pending"}) == 1
    assert _sample(metrics, "alliance_fhir_worker_leases_claimed_total", me) == 2
    leases.stop()  # the drain: releases, leaves, closes a's connection
    assert _sample(metrics, "alliance_fhir_worker_leases_held", me) == 0
    assert [w.worker_id for w in b.live_workers()] == ["worker-b"]
    assert b.counts().leased == 0
    got = [b.claim("source", lease_seconds=30, since=since) for _ in range(4)]
    assert len({c.key for c in got if c}) == 3
    assert got[3] is None


def test_a_failed_item_is_given_back_and_a_vanished_source_is_not_claimed(
    queues: list[WorkQueue],
) -> None:
    a, b = queues
    metrics = DaemonMetrics(ready_window=60)
    leases = Leases(a, lease_seconds=30, retry_seconds=30, metrics=metrics)
    since = a.now()
    a.offer("source", ITEMS[:1])
    claim = leases.claim("source", since=since)
    assert claim is not None
    with pytest.raises(RuntimeError), leases.working(claim):
        raise RuntimeError("server down")
    assert b.claim("source", lease_seconds=30, since=since) == claim  # back at once
    b.release(claim.key)
    claim = leases.claim("source", since=since)
    assert claim is not None
    with leases.working(claim) as job:
        job.retry_after = 30  # records refused: tried again after a while, not now
    assert b.claim("source", lease_seconds=30, since=since) is None
    assert b.counts().pending == 1
    # a source nobody offers this cycle is not claimed (its file is gone)
    later = b.now()
    b.offer("source", ITEMS[1:2])
    got = b.claim("source", lease_seconds=30, since=later)
    assert got is not None
    assert got.key == "source:2"
    assert b.claim("source", lease_seconds=30, since=later) is None


def test_many_concurrent_claimers_never_share_an_item(postgres: Cluster) -> None:
    """PostgreSQL only: SKIP LOCKED between connections (SQLite keeps one daemon)."""
    schema = postgres.new_schema()
    url = postgres.schema_url(schema)
    open_store(url, password=postgres.password).close()
    workers = [open_work_queue(url, password=postgres.password) for _ in range(6)]
    since = workers[0].now()
    workers[0].offer("source", [(f"source:{n}", "fp") for n in range(120)])
    taken: Counter[str] = Counter()
    lock = threading.Lock()

    def drain(q: WorkQueue) -> None:
        while (c := q.claim("source", lease_seconds=30, since=since)) is not None:
            with lock:
                taken[c.key] += 1
            assert q.done(c)

    threads = [threading.Thread(target=drain, args=(q,)) for q in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for q in workers:
        q.close()
    postgres.drop_schema(schema)
    assert len(taken) == 120
    assert set(taken.values()) == {1}
