"""Tenants (#17) in the daemon: one /metrics and /readyz over every tenant's loop, and a
tenant whose state store another daemon holds stops the start (exit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from alliance_fhir.config import load_settings
from alliance_fhir.daemon import DaemonMetrics, DaemonOptions, InstanceLock, lock_path_for
from alliance_fhir.daemon.tenants import TenantsMetrics, run_tenants
from alliance_fhir.tenants import all_tenant_settings

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _metrics(clock: list[float]) -> DaemonMetrics:
    return DaemonMetrics(ready_window=60, clock=lambda: clock[0])


@pytest.mark.parametrize("accept", ["", OPENMETRICS])
def test_every_sample_carries_its_tenant_and_each_family_is_declared_once(accept: str) -> None:
    """What /metrics answers (``exposition``), in the text format and in OpenMetrics, which
    Prometheus asks for first."""
    clock = [1000.0]
    a, b = _metrics(clock), _metrics(clock)
    a.pushed.inc(3, operation="created")
    b.errors.inc(step="probe")
    body, content_type = TenantsMetrics({"clinic-a": a, "clinic-b": b}).exposition(accept)
    text = body.decode("utf-8")
    lines = text.splitlines()
    parse = openmetrics_families if accept else text_string_to_metric_families
    assert content_type.startswith("application/openmetrics-text" if accept else "text/plain")
    families = {family.name: family for family in parse(text)}

    def value(family: str, sample: str, **labels: str) -> float:
        found = [
            s.value for s in families[family].samples if s.name == sample and s.labels == labels
        ]
        assert len(found) == 1, (sample, labels, found)
        return found[0]

    declared = [x.split()[2] for x in lines if x.startswith("# TYPE ")]
    assert len(declared) == len(set(declared))  # each family once, whatever the tenants
    assert any(name.startswith("alliance_fhir_resources_pushed") for name in declared)
    pushed = "alliance_fhir_resources_pushed"
    assert value(pushed, f"{pushed}_total", tenant="clinic-a", operation="created") == 3
    assert value(pushed, f"{pushed}_total", tenant="clinic-b", operation="created") == 0
    assert (
        value("alliance_fhir_errors", "alliance_fhir_errors_total", tenant="clinic-b", step="probe")
        == 1
    )
    assert value("alliance_fhir_conflicts", "alliance_fhir_conflicts", tenant="clinic-a") == 0
    samples = [s for family in families.values() for s in family.samples]
    assert samples
    assert all(s.labels.get("tenant") in ("clinic-a", "clinic-b") for s in samples)


def test_ready_only_when_every_tenant_is_and_the_reason_names_the_others() -> None:
    clock = [1000.0]
    a, b = _metrics(clock), _metrics(clock)
    combined = TenantsMetrics({"clinic-a": a, "clinic-b": b})
    a.cycle_finished(ok=True, duration=1, server_ok=True)
    b.cycle_finished(ok=False, duration=1, server_ok=False)

    assert combined.readiness() == (False, "clinic-b: last cycle failed")
    b.cycle_finished(ok=True, duration=1, server_ok=True)
    assert combined.readiness() == (True, "ready")


def test_a_tenant_held_by_another_daemon_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALLIANCE_FHIR_TENANT", raising=False)
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(
        f'state_path = "{tmp_path}/state.sqlite3"\ninbox_dir = "{tmp_path}/inbox"\n'
        "[tenants.a]\n[tenants.b]\n",
        encoding="utf-8",
    )
    root = load_settings(config)
    tenants = all_tenant_settings(root)
    held = InstanceLock(lock_path_for(tenants["b"].state_path))
    held.acquire()
    try:
        code = run_tenants(root, tenants, DaemonOptions(once=True, metrics=False))
    finally:
        held.release()

    assert code == 3
    # a's lock was given back: a daemon for it alone can start now
    free = InstanceLock(lock_path_for(tenants["a"].state_path))
    free.acquire()
    free.release()


def test_once_runs_every_tenant_and_exits_1_when_a_cycle_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--once`` with a server nobody listens on: each tenant's cycle runs (its inbox and
    lock made) and fails, so exit 1."""
    monkeypatch.delenv("ALLIANCE_FHIR_TENANT", raising=False)
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(
        f'state_path = "{tmp_path}/state.sqlite3"\ninbox_dir = "{tmp_path}/inbox"\n'
        'server_url = "http://127.0.0.1:9/fhir"\nretry_attempts = 1\nmetrics_port = 0\n'
        "[tenants.a]\n[tenants.b]\n",
        encoding="utf-8",
    )
    root = load_settings(config)
    tenants = all_tenant_settings(root)

    code = run_tenants(root, tenants, DaemonOptions(once=True, monitoring=False))

    assert code == 1
    assert (tmp_path / "inbox" / "a").is_dir()
    assert (tmp_path / "inbox" / "b").is_dir()
    assert {p.name for p in tmp_path.glob("state.*.lock")} == {
        "state.a.sqlite3.lock",
        "state.b.sqlite3.lock",
    }


def test_python_m_daemon_runs_every_tenant_or_the_selected_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alliance_fhir.daemon.__main__ import main

    monkeypatch.delenv("ALLIANCE_FHIR_TENANT", raising=False)
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(
        f'state_path = "{tmp_path}/state.sqlite3"\ninbox_dir = "{tmp_path}/inbox"\n'
        'server_url = "http://127.0.0.1:9/fhir"\nretry_attempts = 1\n'
        "[tenants.a]\n[tenants.b]\n",
        encoding="utf-8",
    )
    args = ["--config", str(config), "--once", "--no-metrics", "--no-monitoring"]

    monkeypatch.setenv("ALLIANCE_FHIR_TENANT", "b")
    assert main(args) == 1
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["b"]
    monkeypatch.delenv("ALLIANCE_FHIR_TENANT")
    assert main(args) == 1
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["a", "b"]
    monkeypatch.setenv("ALLIANCE_FHIR_TENANT", "c")
    assert main(args) == 2


def test_several_tenants_with_multiprocess_metrics_are_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ALLIANCE_FHIR_TENANT", raising=False)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "prom"))
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(
        f'state_path = "{tmp_path}/state.sqlite3"\ninbox_dir = "{tmp_path}/inbox"\n'
        "[tenants.a]\n[tenants.b]\n",
        encoding="utf-8",
    )
    root = load_settings(config)

    assert run_tenants(root, all_tenant_settings(root), DaemonOptions(once=True)) == 2
    assert "run one daemon per tenant" in capsys.readouterr().err
    assert not (tmp_path / "inbox").exists()
