"""`doctor` per resource type, its exit codes, and sync refusing a server with a blocker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clikit import Run

from alliance_fhir.fhir import FhirClient

REPO = Path(__file__).resolve().parents[3]
WRITTEN = ("QuestionnaireResponse", "Observation", "Goal", "CarePlan", "Task")
OPTIONAL = ("CodeSystem", "Questionnaire", "Flag")
SERVER = ("--server-url", "http://127.0.0.1:9/fhir", "--state", "s.sqlite3")


def statement(*, system: tuple[str, ...] = ("batch",), goal_update: bool = True) -> dict:
    def res(rtype: str, codes: tuple[str, ...], conditional: bool) -> dict[str, Any]:
        return {
            "type": rtype,
            "interaction": [{"code": c} for c in codes],
            "conditionalCreate": conditional,
            "searchParam": [{"name": "identifier"}],
        }

    write = ("create", "read", "search-type", "update")
    resources = [
        res(
            t,
            write if (t != "Goal" or goal_update) else ("create", "read", "search-type"),
            t != "Goal",
        )
        for t in WRITTEN
    ]
    resources += [res(t, ("read", "search-type"), False) for t in OPTIONAL]
    resources += [res(t, ("read", "search-type"), False) for t in ("Patient", "Practitioner")]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "software": {"name": "EHR", "version": "9"},
        "rest": [
            {"mode": "server", "resource": resources, "interaction": [{"code": c} for c in system]}
        ],
    }


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Any:
    def use(doc: dict[str, Any]) -> None:
        monkeypatch.setattr(FhirClient, "capabilities", lambda self, **_: doc)

    return use


def test_doctor_names_per_type_strategy_and_guarantee(run: Run, serve: Any) -> None:
    serve(statement())
    result = run(*SERVER, "doctor")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[1:3] == ["FHIR version: 4.0.1 (EHR 9)", "write strategy: batch"]
    assert (
        "Observation: allows create read search-type update; batch + If-None-Exist; "
        "no duplicates, no silent overwrite (If-Match)"
    ) in lines
    assert (
        "Goal: allows create read search-type update; batch + identifier lookup; "
        "no duplicates, no silent overwrite (If-Match); one writer at a time"
    ) in lines
    assert "Flag: allows read search-type; not written; none" in lines
    assert (
        "degraded: Questionnaire: not written; "
        "responses cite the Questionnaire by canonical URL only"
    ) in lines
    assert lines[-1] == "ok"
    assert result.err == ""


def test_doctor_exits_2_with_one_line_per_blocker(run: Run, serve: Any) -> None:
    serve(statement(goal_update=False))
    result = run(*SERVER, "doctor")
    assert result.code == 2
    assert result.err == "blocker: Goal: interaction 'update' missing\n"
    assert result.out.splitlines()[-1] == "not ready"


def test_doctor_json(run: Run, serve: Any) -> None:
    serve(statement(system=()))
    result = run(*SERVER, "doctor", "--json")
    assert result.code == 0
    report = json.loads(result.out)
    assert report["ok"] is True
    assert report["strategy"] == "single"
    assert [t["resource_type"] for t in report["types"]][:2] == [
        "QuestionnaireResponse",
        "Observation",
    ]


def test_sync_refuses_to_start_on_a_blocker(
    run: Run, serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve(statement(goal_update=False))
    sent: list[str] = []
    monkeypatch.setattr(FhirClient, "_execute", lambda self, method, *a, **k: sent.append(method))
    result = run(*SERVER, "push", "goals", str(REPO / "examples" / "goals"))
    assert result.code == 2
    assert result.err.startswith(
        "error: the server cannot be synced safely (see `alliance-fhir doctor`): "
        "Goal: interaction 'update' missing"
    )
    assert sent == []
