"""Prometheus text format, readiness, and the HTTP endpoints."""

from __future__ import annotations

import re

import httpx
import pytest

from alliance_fhir.daemon.metrics import DaemonMetrics, MetricsServer, Registry, format_value

SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*\})? \S+$')


def parse(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_every_family_has_help_and_type_before_its_samples() -> None:
    text = DaemonMetrics(ready_window=60).render()
    assert text.endswith("\n")
    families: list[str] = []
    for line in text.splitlines():
        if line.startswith("# HELP "):
            families.append(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == families[-1]
            assert kind in ("counter", "gauge")
        else:
            assert SAMPLE.match(line), line
            assert line.split("{")[0].split(" ")[0] == families[-1]
    assert len(families) == len(set(families))
    assert all(f.startswith("alliance_fhir_") for f in families)
    for wanted in (
        "alliance_fhir_last_success_timestamp_seconds",
        "alliance_fhir_cycle_duration_seconds",
        "alliance_fhir_resources_pushed_total",
        "alliance_fhir_resources_pulled_total",
        "alliance_fhir_errors_total",
        "alliance_fhir_conflicts",
        "alliance_fhir_dead_letters",
        "alliance_fhir_inbox_depth",
        "alliance_fhir_cycles_total",
    ):
        assert wanted in families
    counters = [n for n in families if f"# TYPE {n} counter" in text]
    assert all(n.endswith("_total") for n in counters)


def test_counters_and_labels() -> None:
    reg = Registry()
    c = reg.counter("things_total", "Things.", ["kind"])
    g = reg.gauge("depth", 'Depth with "quotes"\nand a newline.')
    c.inc(kind='we"ird\\')
    c.inc(2, kind="a")
    g.set(1.5)
    text = reg.render()
    assert '# HELP alliance_fhir_depth Depth with "quotes"\\nand a newline.' in text
    assert 'alliance_fhir_things_total{kind="we\\"ird\\\\"} 1' in text
    assert 'alliance_fhir_things_total{kind="a"} 2' in text
    assert "alliance_fhir_depth 1.5" in text
    with pytest.raises(ValueError, match="cannot decrease"):
        c.inc(-1, kind="a")
    with pytest.raises(ValueError, match="cannot be set"):
        c.set(3, kind="a")
    with pytest.raises(ValueError, match="takes labels"):
        c.inc(other="x")


@pytest.mark.parametrize(
    ("value", "text"),
    [(3.0, "3"), (0.25, "0.25"), (float("inf"), "+Inf"), (float("nan"), "NaN"), (1e20, "1e+20")],
)
def test_value_format(value: float, text: str) -> None:
    assert format_value(value) == text


def test_readiness_needs_a_good_last_cycle_and_a_recent_server_answer() -> None:
    now = [1000.0]
    m = DaemonMetrics(ready_window=60, clock=lambda: now[0])
    assert m.readiness() == (False, "no cycle finished yet")
    m.cycle_finished(ok=True, duration=0.5, server_ok=True)
    assert m.readiness() == (True, "ready")
    values = parse(m.render())
    assert values["alliance_fhir_last_success_timestamp_seconds"] == 1000
    assert values['alliance_fhir_cycles_total{outcome="ok"}'] == 1
    assert values["alliance_fhir_server_reachable"] == 1
    now[0] += 61
    assert m.readiness() == (False, "FHIR server not reached recently")
    m.cycle_finished(ok=False, duration=2.0, server_ok=False)
    assert m.readiness() == (False, "last cycle failed")
    values = parse(m.render())
    assert values["alliance_fhir_last_success_timestamp_seconds"] == 1000
    assert values['alliance_fhir_cycles_total{outcome="failed"}'] == 1
    assert values["alliance_fhir_server_reachable"] == 0


def test_http_endpoints() -> None:
    m = DaemonMetrics(ready_window=60)
    with MetricsServer(m, "127.0.0.1", 0) as server:
        host, port = server.address
        base = f"http://{host}:{port}"
        assert httpx.get(f"{base}/healthz").status_code == 200
        not_ready = httpx.get(f"{base}/readyz")
        assert not_ready.status_code == 503
        assert "no cycle" in not_ready.text
        m.cycle_finished(ok=True, duration=0.1, server_ok=True)
        assert httpx.get(f"{base}/readyz").status_code == 200
        resp = httpx.get(f"{base}/metrics")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert "alliance_fhir_cycles_total" in resp.text
        assert httpx.get(f"{base}/other").status_code == 404
