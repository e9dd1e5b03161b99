"""Data other systems wrote, read back without misreading it (issue #14, items 2-5).

Every test writes foreign resources into the real HAPI server itself (straight over HTTP, as
an EHR or another form filler would), then runs ``monitor``, ``pull goals`` and ``report``
through the CLI and asserts what a user sees: exit codes, the problems named, scores and
alerts on the server. The shapes written:

Goals: US Core-style (meta.profile, LOINC measure, detailQuantity with comparator,
dueDate), the spec's example shape (SNOMED description coding only, detailRange,
dueDuration, another system's extension, meta.security), detailString, detailCodeableConcept,
contained Condition in ``addresses``, no identifier, every R4 lifecycleStatus (proposed,
planned, accepted, active, on-hold, completed, cancelled, entered-in-error, rejected) and
achievementStatus values, our identifier system with a value in another shape, one Goal
linked from two CarePlans.
QuestionnaireResponses: a foreign SNOMED coding with code "1" on trc-client, our coding
with and without ``system``, our qualified answer code, nested groups, an extra linkId,
a missing optional item, valueInteger and valueDecimal, canonical with and without
``|version``, an identifier-only subject reference, entered-in-error after an alert, amended.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from alliance_fhir.api import AllianceFhir
from alliance_fhir.cli import main

from .clinickit import make_api

NS = "http://alliance-fhir.org/fhir/identifier"
OUR_CODES = "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir-codes"
TRC = "http://alliance-fhir.org/fhir/Questionnaire/trc-client"
SRS = "http://alliance-fhir.org/fhir/Questionnaire/srs"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
MRN = "http://example-clinic.org/mrn"
GOAL_STATUS = "http://terminology.hl7.org/CodeSystem/goal-achievement"
JSON = {"Content-Type": "application/fhir+json"}
NO_CACHE = {"Cache-Control": "no-cache"}
NOW = datetime.now(UTC).replace(microsecond=0)

TRC_ITEMS = [
    "heard",
    "understood",
    "validated",
    "trust",
    "goals-agreed",
    "goals-own",
    "progress-agreed",
    "small-steps",
    "approach",
    "involved",
    "pace",
    "speak-up",
    "safe",
    "respected",
    "confidentiality",
    "held-back",
    "overall",
]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


@pytest.fixture
def api(fhir_base_url: str, published_clinic: Path, state: Path) -> Iterator[AllianceFhir]:
    with make_api(fhir_base_url, state) as instance:
        yield instance


@pytest.fixture
def cli(fhir_base_url: str, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)
    for name in ("ALLIANCE_FHIR_CONFIG", "ALLIANCE_FHIR_LOG_LEVEL", "ALLIANCE_FHIR_LOG_JSON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_URL", fhir_base_url)
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PATH", str(state))

    def run(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        assert "Traceback" not in result.stdout + result.stderr
        return result.exit_code, result.stdout, result.stderr

    return run


def _post(http: httpx.Client, resource: dict[str, Any]) -> str:
    resp = http.post(f"/{resource['resourceType']}", json=resource, headers=JSON)
    assert resp.status_code in (200, 201), resp.text
    return str(resp.json()["id"])


def _put(http: httpx.Client, resource: dict[str, Any]) -> None:
    url = f"/{resource['resourceType']}/{resource['id']}"
    resp = http.put(url, json=resource, headers=JSON)
    assert resp.status_code in (200, 201), resp.text


def _get(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    resp = http.get(path, params={**params, "_count": "200"}, headers=NO_CACHE)
    resp.raise_for_status()
    return [e["resource"] for e in resp.json().get("entry") or []]


def _patient(http: httpx.Client, mrn: str) -> str:
    return _post(http, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}]})


def _trc(
    patient_id: str,
    answer: Any,
    *,
    canonical: str = f"{TRC}|1.0.0",
    days_ago: int = 1,
    nested: bool = False,
    extra: bool = False,
) -> dict[str, Any]:
    """A trc-client response from another form filler (the optional free-text item left
    out); ``answer(link_id)`` is the answer."""
    items = [{"linkId": link_id, "answer": [answer(link_id)]} for link_id in TRC_ITEMS]
    if nested:
        items = [
            {"linkId": "group-bond", "text": "About us", "item": items[:4]},
            {"linkId": "group-rest", "item": items[4:]},
        ]
    if extra:
        items.append({"linkId": "ehr-mood", "answer": [{"valueString": "steady"}]})
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": canonical,
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id}"},
        "authored": (NOW - timedelta(days=days_ago)).isoformat(),
        "item": items,
    }


def _coded(code: str, system: str | None = OUR_CODES) -> dict[str, Any]:
    coding = {"code": code} if system is None else {"system": system, "code": code}
    return {"valueCoding": coding}


def _high(link_id: str) -> str:
    return "1" if link_id == "held-back" else "5"


def _low(link_id: str) -> str:
    return "5" if link_id == "held-back" else "1"


def _score(http: httpx.Client, qr_id: str) -> dict[str, Any] | None:
    found = _get(http, "/Observation", **{"derived-from": f"QuestionnaireResponse/{qr_id}"})
    return found[0] if found else None


def _flags(http: httpx.Client, patient_id: str) -> list[dict[str, Any]]:
    return _get(http, "/Flag", identifier=f"{NS}/alert-flag|", subject=f"Patient/{patient_id}")


def test_foreign_codings_are_not_scored_and_raise_no_alert(
    api: AllianceFhir, fhir_http: httpx.Client, cli: Any
) -> None:
    snomed_pid = _patient(fhir_http, "SYN-EHR-01")
    ours_pid = _patient(fhir_http, "SYN-EHR-02")
    nosys_pid = _patient(fhir_http, "SYN-EHR-03")
    snomed = _post(fhir_http, _trc(snomed_pid, lambda _: _coded("1", SNOMED)))
    # our codes, canonical without |version, nested groups and an EHR's extra question
    ours = _post(
        fhir_http,
        _trc(ours_pid, lambda q: _coded(_high(q)), canonical=TRC, nested=True, extra=True),
    )
    # system dropped by the form filler, the qualified answer code, and the optional
    # free-text item left out
    nosys = _post(
        fhir_http,
        _trc(
            nosys_pid,
            lambda q: _coded(_high(q), None) if q != "trust" else _coded("trc-client.true5.5"),
        ),
    )
    # a system-less code that is not a scale point, and a LOINC answer on one item
    odd_pid = _patient(fhir_http, "SYN-EHR-04")
    odd = _post(
        fhir_http,
        _trc(
            odd_pid,
            lambda q: {"heard": _coded("LA6568-5", LOINC), "safe": _coded("9", None)}.get(
                q, _coded(_high(q))
            ),
        ),
    )
    # identifier-only subject: completed elsewhere, for a patient we cannot point at
    ident_only = _trc(ours_pid, lambda q: _coded(_high(q)))
    ident_only["subject"] = {"identifier": {"system": MRN, "value": "SYN-EHR-02"}}
    ident_qr = _post(fhir_http, ident_only)

    code, out, err = cli("monitor")

    assert code == 0
    assert "3 not scored" in out
    lines = [line for line in err.splitlines() if line.startswith("not scored: ")]
    assert len(lines) == 3
    snomed_line = next(line for line in lines if f"QuestionnaireResponse/{snomed}:" in line)
    assert f"heard: coding from {SNOMED}, not the trc-client CodeSystem" in snomed_line
    odd_line = next(line for line in lines if f"QuestionnaireResponse/{odd}:" in line)
    assert f"heard: coding from {LOINC}, not the trc-client CodeSystem" in odd_line
    assert "safe: code without a system not on the true5 scale" in odd_line
    ident_line = next(line for line in lines if f"QuestionnaireResponse/{ident_qr}:" in line)
    assert "subject: no reference to a Patient on this server" in ident_line
    assert _score(fhir_http, snomed) is None
    assert _score(fhir_http, odd) is None
    assert _flags(fhir_http, snomed_pid) == []
    for qr_id in (ours, nosys):
        obs = _score(fhir_http, qr_id)
        assert obs is not None
        assert obs["valueQuantity"]["value"] == 5
        assert obs["status"] == "final"

    code, out, _ = cli("report", "--patient", snomed_pid, "--out", "r.html")
    assert code == 0
    page = Path("r.html").read_text()
    assert f"not scored: QuestionnaireResponse/{snomed}: heard: coding from {SNOMED}" in page


def test_numbers_from_other_fillers_and_amended_responses_are_scored(
    api: AllianceFhir, fhir_http: httpx.Client, cli: Any
) -> None:
    pid = _patient(fhir_http, "SYN-EHR-10")
    marks = {"q1": 9, "q2": 8, "q3": 9, "q4": 10}
    qr = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{SRS}|1.0.0",
        "status": "completed",
        "subject": {"reference": f"Patient/{pid}"},
        "authored": (NOW - timedelta(days=2)).date().isoformat(),
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
            ]
        },
        "item": [
            {"linkId": q, "answer": [{"valueInteger": v} if q != "q4" else {"valueDecimal": 9.5}]}
            for q, v in marks.items()
        ],
    }
    qr_id = _post(fhir_http, qr)
    code, out, _ = cli("monitor")
    assert code == 0
    assert "0 not scored" in out
    first = _score(fhir_http, qr_id)
    assert first is not None
    assert first["valueQuantity"]["value"] == 35.5

    current = _get(fhir_http, "/QuestionnaireResponse", _id=qr_id)[0]
    current["status"] = "amended"
    current["item"][0]["answer"] = [{"valueInteger": 10}]
    _put(fhir_http, current)
    code, out, _ = cli("monitor")
    assert code == 0
    amended = _score(fhir_http, qr_id)
    assert amended is not None
    assert amended["valueQuantity"]["value"] == 36.5


def test_a_withdrawn_response_withdraws_its_score_and_closes_its_alerts(
    api: AllianceFhir, fhir_http: httpx.Client, cli: Any
) -> None:
    pid = _patient(fhir_http, "SYN-EHR-20")
    qr_id = _post(fhir_http, _trc(pid, lambda q: _coded(_low(q))))
    code, out, _ = cli("monitor")
    assert code == 0
    flags = _flags(fhir_http, pid)
    assert flags
    assert all(f["status"] == "active" for f in flags)
    obs = _score(fhir_http, qr_id)
    assert obs is not None
    assert obs["status"] == "final"

    current = _get(fhir_http, "/QuestionnaireResponse", _id=qr_id)[0]
    current["status"] = "entered-in-error"
    _put(fhir_http, current)
    code, out, _ = cli("monitor")

    assert code == 0
    assert "1 withdrawn" in out
    withdrawn = _score(fhir_http, qr_id)
    assert withdrawn is not None
    assert withdrawn["status"] == "entered-in-error"
    assert all(f["status"] == "inactive" for f in _flags(fhir_http, pid))
    tasks = _get(fhir_http, "/Task", identifier=f"{NS}/alert-task|", subject=f"Patient/{pid}")
    assert tasks
    assert all(t["status"] == "completed" for t in tasks)
    for task in tasks:
        note = task["note"][-1]["text"]
        assert f"QuestionnaireResponse/{qr_id}) was withdrawn" in note
        assert "recovered" not in note.lower()


def test_a_pushed_response_withdrawn_in_the_ehr_withdraws_the_score_we_pushed(
    api: AllianceFhir, fhir_http: httpx.Client, cli: Any, tmp_path: Path
) -> None:
    pid = _patient(fhir_http, "SYN-EHR-21")
    records = [
        {
            "key": f"syn-ehr-21-{week}",
            "instrument": "srs",
            "authored": (NOW - timedelta(weeks=4 - week)).isoformat(),
            "answers": {q: str(mark) for q in ("q1", "q2", "q3", "q4")},
        }
        for week, mark in enumerate([9.6, 9.7, 9.4, 7.8])
    ]
    doc = {"defaults": {"patient": {"system": MRN, "value": "SYN-EHR-21"}}, "assessments": records}
    path = tmp_path / "srs.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert api.push_assessments([path]).ok
    assert cli("monitor")[0] == 0
    assert {f["status"] for f in _flags(fhir_http, pid)} == {"active"}

    [last] = _get(fhir_http, "/QuestionnaireResponse", identifier=f"{NS}/assessment|syn-ehr-21-3")
    last["status"] = "entered-in-error"
    _put(fhir_http, last)
    code, out, _ = cli("monitor")

    assert code == 0
    assert "1 withdrawn" in out
    [score] = _get(fhir_http, "/Observation", identifier=f"{NS}/score|syn-ehr-21-3")
    assert score["status"] == "entered-in-error"
    [earlier] = _get(fhir_http, "/Observation", identifier=f"{NS}/score|syn-ehr-21-2")
    assert earlier["status"] == "final"
    assert {f["status"] for f in _flags(fhir_http, pid)} == {"inactive"}
    tasks = _get(fhir_http, "/Task", identifier=f"{NS}/alert-task|", subject=f"Patient/{pid}")
    assert tasks
    for task in tasks:
        assert f"(QuestionnaireResponse/{last['id']}) was withdrawn" in task["note"][-1]["text"]


def _goal(pid: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "a goal"},
        "subject": {"reference": f"Patient/{pid}"},
        **fields,
    }


def test_goals_as_the_ehr_writes_them(api: AllianceFhir, fhir_http: httpx.Client, cli: Any) -> None:
    pid = _patient(fhir_http, "SYN-EHR-30")
    doc = _post(
        fhir_http,
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999984"}],
        },
    )
    achieved = {"coding": [{"system": GOAL_STATUS, "code": "achieved"}]}
    shapes = {
        "us-core": _goal(
            pid,
            meta={"profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-goal"]},
            description={"text": "Stay sober for a month"},
            achievementStatus={"coding": [{"system": GOAL_STATUS, "code": "improving"}]},
            target=[
                {
                    "measure": {
                        "coding": [{"system": LOINC, "code": "63608-5", "display": "Days sober"}]
                    },
                    "detailQuantity": {
                        "value": 30,
                        "comparator": ">=",
                        "unit": "d",
                        "system": UCUM,
                        "code": "d",
                    },
                    "dueDate": "2030-06-01",
                }
            ],
        ),
        "spec-example": _goal(
            pid,
            lifecycleStatus="on-hold",
            description={
                "coding": [{"system": SNOMED, "code": "281004", "display": "Weight loss"}]
            },
            extension=[{"url": "http://ehr.example.org/fhir/ext/origin", "valueString": "intake"}],
            meta={
                "security": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": "HTEST",
                    }
                ]
            },
            target=[
                {
                    "measure": {"text": "Weight"},
                    "detailRange": {
                        "low": {"value": 160, "unit": "lbs"},
                        "high": {"value": 180, "unit": "lbs"},
                    },
                    "dueDuration": {"value": 12, "unit": "wk", "system": UCUM, "code": "wk"},
                }
            ],
        ),
        "string": _goal(
            pid,
            lifecycleStatus="proposed",
            description={"text": "Call my sister"},
            target=[{"measure": {"text": "Calls"}, "detailString": "once a week"}],
        ),
        "concept": _goal(
            pid,
            lifecycleStatus="planned",
            description={"text": "Sleep better"},
            target=[
                {
                    "measure": {"text": "Sleep"},
                    "detailCodeableConcept": {"text": "restful most nights"},
                }
            ],
        ),
        "contained": _goal(
            pid,
            lifecycleStatus="accepted",
            description={"text": "Fewer panic attacks"},
            contained=[
                {
                    "resourceType": "Condition",
                    "id": "c1",
                    "subject": {"reference": f"Patient/{pid}"},
                    "code": {"text": "Panic disorder"},
                }
            ],
            addresses=[{"reference": "#c1", "display": "Panic disorder"}],
        ),
        "completed": _goal(
            pid,
            lifecycleStatus="completed",
            description={"text": "Find a GP"},
            achievementStatus=achieved,
        ),
        "cancelled": _goal(pid, lifecycleStatus="cancelled", description={"text": "Move house"}),
        "error": _goal(pid, lifecycleStatus="entered-in-error", description={"text": "Typo goal"}),
        "rejected": _goal(pid, lifecycleStatus="rejected", description={"text": "Quit work"}),
        "odd-identifier": _goal(
            pid,
            description={"text": "Odd one"},
            identifier=[{"system": f"{NS}/goal", "value": "EHR goal #7 (imported)"}],
        ),
    }
    ids = {name: _post(fhir_http, goal) for name, goal in shapes.items()}
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{pid}"},
        "author": {"reference": f"Practitioner/{doc}"},
        "goal": [{"reference": f"Goal/{gid}"} for gid in ids.values()],
    }
    plan_id = _post(fhir_http, plan)
    second = {**plan, "goal": [{"reference": f"Goal/{ids['string']}"}]}
    _post(fhir_http, second)

    code, out, err = cli("pull", "goals", "--patient", pid)

    assert code == 1
    errors = err.splitlines()
    assert len(errors) == 1, err
    error = errors[0]
    assert error.startswith(
        f"error: Goal/{ids['odd-identifier']} at Goal.identifier [identifier]: "
        "String should match pattern"
    )
    assert "\u201cStay sober for a month\u201d" in out
    assert "Status: active, improving" in out
    assert "Target: Days sober: at least 30 d by 2030-06-01" in out
    assert "\u201cWeight loss\u201d" in out
    assert "Status: on-hold" in out
    assert "Target: Weight: 160 to 180 lbs within 12 wk" in out
    assert "Target: Calls: once a week" in out
    assert "Target: Sleep: restful most nights" in out
    assert "Addresses: Panic disorder" in out
    for status in ("proposed", "planned", "accepted", "completed, achieved", "cancelled"):
        assert f"Status: {status}" in out
    assert "Status: entered-in-error" in out
    assert "Status: rejected" in out
    assert out.count("\u201cCall my sister\u201d") == 2
    shown_under = [line for line in out.splitlines() if "(shown under goal plan ehr-" in line]
    assert len(shown_under) == 1
    assert "Call my sister" in shown_under[0]
    assert f"Goal plan ehr-{plan_id}" in out
    assert "Odd one" not in out

    code, _, _ = cli("report", "--patient", pid, "--out", "goals.html")
    assert code == 0
    page = Path("goals.html").read_text()
    assert page.count("Call my sister") == 1
    assert "Days sober: at least 30 d by 2030-06-01" in page
    assert "Weight: 160 to 180 lbs within 12 wk" in page
    assert f"not read: Goal/{ids['odd-identifier']} at Goal.identifier" in page
    assert "Typo goal" not in page
    assert "Quit work" not in page
