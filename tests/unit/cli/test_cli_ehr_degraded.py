"""`doctor` and `monitor` on a server that takes no Flag (alerts as Task only) and with a
per-type write switch (issue #13 items 1 and 6)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from clikit import Run
from test_cli_doctor import SERVER, statement

from alliance_fhir.api import MonitorResult
from alliance_fhir.cli.render import print_monitor
from alliance_fhir.fhir import FhirClient


@pytest.fixture(autouse=True)
def serve(monkeypatch: pytest.MonkeyPatch) -> None:
    doc: dict[str, Any] = statement(system=("transaction", "batch"))
    monkeypatch.setattr(FhirClient, "capabilities", lambda self, **_: doc)


def test_doctor_says_alerts_go_as_task_only_where_flag_is_not_writable(run: Run) -> None:
    result = run(*SERVER, "doctor")
    assert result.code == 0
    lines = result.out.splitlines()
    assert "alerts: Task only (the server takes no Flag writes)" in lines
    assert (
        "degraded: Flag: not written; alerts: Task only (the server takes no Flag writes)"
    ) in lines
    report = json.loads(run(*SERVER, "doctor", "--json").out)
    assert report["alerts"] == "Task only (the server takes no Flag writes)"


def test_doctor_shows_a_configured_alert_carrier(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_ALERT_RESOURCES", "report")
    lines = run(*SERVER, "doctor").out.splitlines()
    said = "not written; reported in the monitor's output only (alert_resources = report)"
    assert f"alerts: {said}" in lines
    assert f"degraded: Flag: not written; alerts: {said}" in lines


def test_doctor_shows_the_effective_strategy_of_an_overridden_type(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_WRITE_MODES", '{"Observation": "single"}')
    result = run(*SERVER, "doctor")
    assert result.code == 0
    lines = result.out.splitlines()
    assert "write strategy: transaction" in lines
    assert (
        "Observation: allows create read search-type update; single + If-None-Exist "
        "(write_modes); no duplicates, no silent overwrite (If-Match)"
    ) in lines
    assert (
        "QuestionnaireResponse: allows create read search-type update; transaction + "
        "If-None-Exist; no duplicates, no silent overwrite (If-Match)"
    ) in lines
    by_type = {
        t["resource_type"]: t for t in json.loads(run(*SERVER, "doctor", "--json").out)["types"]
    }
    assert by_type["Observation"]["strategy"] == "single + If-None-Exist (write_modes)"


def test_a_bad_write_mode_is_named_and_nothing_runs(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_WRITE_MODES", '{"Obsrvation": "single"}')
    result = run(*SERVER, "doctor")
    assert result.code == 2
    assert "write_modes" in result.err
    assert "Obsrvation: not a resource type sync writes" in result.err
    assert result.out == ""


def test_the_monitor_says_once_how_alerts_were_carried(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_monitor(MonitorResult(pulled=2, alert_note="Task only (the server takes no Flag writes)"))
    out, _ = capsys.readouterr()
    assert out.splitlines()[1:] == [
        "alerts written as: Task only (the server takes no Flag writes)"
    ]
