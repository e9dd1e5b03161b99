"""What a dashboard reads from ``/metrics`` (parsed with the library's own parser), readiness,
and the HTTP endpoints."""

from __future__ import annotations

import os
import re
import socket

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from alliance_fhir.daemon.metrics import CYCLE_BUCKETS, DaemonMetrics, MetricsServer

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(m: DaemonMetrics, name: str, **labels: str) -> float | None:
    return samples(m.render()).get((name, frozenset(labels.items())))


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_the_families_a_dashboard_uses_keep_their_names_and_types() -> None:
    kinds = types(DaemonMetrics(ready_window=60).render())
    # the parser names a counter's family without _total, as the library does
    wanted = {
        "alliance_fhir_cycles": "counter",
        "alliance_fhir_last_success_timestamp_seconds": "gauge",
        "alliance_fhir_last_cycle_timestamp_seconds": "gauge",
        "alliance_fhir_cycle_duration_seconds": "gauge",
        "alliance_fhir_cycle_seconds": "histogram",
        "alliance_fhir_resources_pushed": "counter",
        "alliance_fhir_resources_pulled": "counter",
        "alliance_fhir_errors": "counter",
        "alliance_fhir_conflicts": "gauge",
        "alliance_fhir_sync_conflicts": "counter",
        "alliance_fhir_dead_letters": "gauge",
        "alliance_fhir_rejected": "counter",
        "alliance_fhir_inbox_depth": "gauge",
        "alliance_fhir_inbox_files": "counter",
        "alliance_fhir_server_reachable": "gauge",
        "alliance_fhir_server_last_reachable_timestamp_seconds": "gauge",
        "alliance_fhir_backoff_seconds": "gauge",
        "alliance_fhir_consecutive_failed_cycles": "gauge",
        "alliance_fhir_start_timestamp_seconds": "gauge",
        "alliance_fhir_work_items": "gauge",
        "alliance_fhir_worker_leases_held": "gauge",
        "alliance_fhir_worker_leases_claimed": "counter",
        "alliance_fhir_worker_leases_lost": "counter",
        # process metrics and the platform
        "process_cpu_seconds": "counter",
        "process_resident_memory_bytes": "gauge",
        "process_open_fds": "gauge",
        "python_info": "gauge",
    }
    assert {name: kinds.get(name) for name in wanted} == wanted


def test_a_fresh_daemon_shows_its_labelled_series_at_zero() -> None:
    values = samples(DaemonMetrics(ready_window=60).render())
    for series, labels in [
        ("alliance_fhir_cycles_total", {"outcome": "ok"}),
        ("alliance_fhir_cycles_total", {"outcome": "failed"}),
        ("alliance_fhir_resources_pushed_total", {"operation": "created"}),
        ("alliance_fhir_resources_pushed_total", {"operation": "updated"}),
        ("alliance_fhir_inbox_files_total", {"outcome": "processed"}),
        ("alliance_fhir_inbox_files_total", {"outcome": "failed"}),
        ("alliance_fhir_resources_pulled_total", {}),
        ("alliance_fhir_last_success_timestamp_seconds", {}),
        ("alliance_fhir_dead_letters", {}),
    ]:
        assert values[(series, frozenset(labels.items()))] == 0, series
    assert values[("process_resident_memory_bytes", frozenset())] > 0


def test_cycle_durations_land_in_buckets_from_sub_second_to_an_hour() -> None:
    assert CYCLE_BUCKETS[0] < 1
    assert CYCLE_BUCKETS[-1] >= 3600
    m = DaemonMetrics(ready_window=60)
    for seconds in (0.2, 3.0, 45.0, 900.0):
        m.cycle_finished(ok=True, duration=seconds, server_ok=True)
    values = samples(m.render())
    bucket = "alliance_fhir_cycle_seconds_bucket"
    assert values[(bucket, frozenset({("le", "0.25")}))] == 1
    assert values[(bucket, frozenset({("le", "5.0")}))] == 2
    assert values[(bucket, frozenset({("le", "60.0")}))] == 3
    assert values[(bucket, frozenset({("le", "600.0")}))] == 3
    assert values[(bucket, frozenset({("le", "1200.0")}))] == 4
    assert values[("alliance_fhir_cycle_seconds_count", frozenset())] == 4
    assert values[("alliance_fhir_cycle_seconds_sum", frozenset())] == pytest.approx(948.2)
    assert values[("alliance_fhir_cycle_duration_seconds", frozenset())] == 900  # the last one


def test_families_count_by_label_and_refuse_misuse() -> None:
    m = DaemonMetrics(ready_window=60)
    m.errors.inc(step='we"ird\\')
    m.pushed.inc(2, operation="created")
    m.conflicts.set(1.5)
    assert value(m, "alliance_fhir_errors_total", step='we"ird\\') == 1
    assert value(m, "alliance_fhir_resources_pushed_total", operation="created") == 2
    assert value(m, "alliance_fhir_conflicts") == 1.5
    assert m.pushed.get(operation="created") == 2
    assert m.errors.get(step="never") == 0
    with pytest.raises(ValueError, match="cannot decrease"):
        m.pushed.inc(-1, operation="created")
    with pytest.raises(ValueError, match="cannot be set"):
        m.pushed.set(3, operation="created")
    with pytest.raises(ValueError, match="takes labels"):
        m.pushed.inc(other="x")


def test_each_daemon_has_its_own_registry() -> None:
    one, two = DaemonMetrics(ready_window=60), DaemonMetrics(ready_window=60)
    one.pulled.inc(5)
    assert value(one, "alliance_fhir_resources_pulled_total") == 5
    assert value(two, "alliance_fhir_resources_pulled_total") == 0


def test_work_queue_and_leases_as_the_workers_report_them() -> None:
    m = DaemonMetrics(ready_window=60)
    worker = m.worker
    assert worker == f"{socket.gethostname()}:{os.getpid()}"
    m.work_queue(pending=4, leased=2, done=9)
    m.leases(held=2, claimed=2, lost=0)
    m.work_queue(pending=1, leased=1, done=13)
    m.leases(held=1, claimed=1, lost=1)  # claimed and lost are increments, held is now
    assert value(m, "alliance_fhir_work_items", state="pending") == 1
    assert value(m, "alliance_fhir_work_items", state="leased") == 1
    assert value(m, "alliance_fhir_work_items", state="done") == 13
    assert value(m, "alliance_fhir_worker_leases_held", worker=worker) == 1
    assert value(m, "alliance_fhir_worker_leases_claimed_total", worker=worker) == 3
    assert value(m, "alliance_fhir_worker_leases_lost_total", worker=worker) == 1
    with pytest.raises(ValueError, match="increments"):
        m.leases(held=0, claimed=-1, lost=0)


def test_a_single_worker_daemon_shows_no_lease_series() -> None:
    values = samples(DaemonMetrics(ready_window=60).render())
    assert not [k for k in values if "lease" in k[0] or "work_items" in k[0]]


def test_labels_carry_no_patient_data() -> None:
    """Every label name and value comes from a short, fixed vocabulary (plus the worker id
    and the platform), whatever the daemon did."""
    m = DaemonMetrics(ready_window=60)
    m.cycle_finished(ok=False, duration=1.0, server_ok=False)
    for step in ("probe", "publish", "inbox", "configured", "monitoring"):
        m.errors.inc(step=step)
    m.work_queue(pending=1, leased=1, done=1)
    m.leases(held=1, claimed=1, lost=1)
    allowed = {
        "outcome": {"ok", "failed", "processed"},
        "operation": {"created", "updated"},
        "step": {"probe", "publish", "inbox", "configured", "monitoring"},
        "state": {"pending", "leased", "done"},
        "worker": {m.worker},
        "le": {*(f"{float(b)}" for b in CYCLE_BUCKETS), "+Inf"},
    }
    for family in text_string_to_metric_families(m.render()):
        if family.name == "python_info":
            continue
        for s in family.samples:
            for label, v in s.labels.items():
                assert v in allowed[label], (s.name, label, v)
    assert re.fullmatch(r"[A-Za-z0-9._-]+:\d+", m.worker)


def test_readiness_needs_a_good_last_cycle_and_a_recent_server_answer() -> None:
    now = [1000.0]
    m = DaemonMetrics(ready_window=60, clock=lambda: now[0])
    assert m.readiness() == (False, "no cycle finished yet")
    m.cycle_finished(ok=True, duration=0.5, server_ok=True)
    assert m.readiness() == (True, "ready")
    assert value(m, "alliance_fhir_last_success_timestamp_seconds") == 1000
    assert value(m, "alliance_fhir_cycles_total", outcome="ok") == 1
    assert value(m, "alliance_fhir_server_reachable") == 1
    now[0] += 61
    assert m.readiness() == (False, "FHIR server not reached recently")
    m.cycle_finished(ok=False, duration=2.0, server_ok=False)
    assert m.readiness() == (False, "last cycle failed")
    assert value(m, "alliance_fhir_last_success_timestamp_seconds") == 1000
    assert value(m, "alliance_fhir_cycles_total", outcome="failed") == 1
    assert value(m, "alliance_fhir_server_reachable") == 0
    assert value(m, "alliance_fhir_server_last_reachable_timestamp_seconds") == 1000


def test_http_endpoints() -> None:
    m = DaemonMetrics(ready_window=60)
    with MetricsServer(m, "127.0.0.1", 0) as server:
        host, port = server.address
        base = f"http://{host}:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        not_ready = httpx.get(f"{base}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.text == "no cycle finished yet\n"
        m.cycle_finished(ok=True, duration=0.1, server_ok=True)
        assert httpx.get(f"{base}/readyz").status_code == 200
        resp = httpx.get(f"{base}/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        got = samples(resp.text)
        assert got[("alliance_fhir_cycles_total", frozenset({("outcome", "ok")}))] == 1
        # a Prometheus that asks for OpenMetrics gets it, and it parses as such
        om = httpx.get(
            f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        # the OpenMetrics parser ships without annotations
        parsed = openmetrics_families(om.text)  # type: ignore[no-untyped-call]
        families = {f.name: f for f in parsed}
        assert families["alliance_fhir_cycles"].type == "counter"
        head = httpx.head(f"{base}/metrics")
        assert head.status_code == 200
        assert head.content == b""
        assert httpx.get(f"{base}/other").status_code == 404
