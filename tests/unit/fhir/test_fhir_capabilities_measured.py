"""What the CapabilityStatement tells the write strategy (issue #13), and when the client
may retry a conditional create."""

from __future__ import annotations

import pytest
from fhirkit import FakeTime, fhir_json, sequence

from alliance_fhir.exceptions import RetriableError
from alliance_fhir.fhir import Capabilities

GOAL = {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active"}
WRITE = ("read", "create", "update", "search-type")


def statement(
    system: tuple[str, ...] = ("transaction", "batch"),
    *,
    conditional: bool = True,
    versioning: str = "versioned-update",
    restricted: tuple[str, ...] = (),
) -> dict:
    types = ["QuestionnaireResponse", "Observation", "Goal", "CarePlan", "Task"]
    types += ["CodeSystem", "Questionnaire", "Flag"]
    resources = [
        {
            "type": t,
            "interaction": [
                {"code": c} for c in WRITE if t not in restricted or c in ("read", "search-type")
            ],
            "conditionalCreate": conditional and t not in restricted,
            "versioning": versioning,
            "searchParam": [{"name": "identifier"}, {"name": "_lastUpdated"}],
        }
        for t in types
    ]
    resources += [
        {"type": p, "interaction": [{"code": "read"}, {"code": "search-type"}]}
        for p in ("Patient", "Practitioner")
    ]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": c} for c in system],
            }
        ],
    }


@pytest.mark.parametrize(
    ("system", "configured", "mode"),
    [
        (("transaction", "batch"), "auto", "transaction"),
        (("batch",), "auto", "batch"),
        ((), "auto", "single"),
        (("transaction", "batch"), "single", "single"),
        ((), "batch", "batch"),
    ],
)
def test_write_mode_is_the_strongest_offered_unless_configured(
    system: tuple[str, ...], configured: str, mode: str
) -> None:
    caps = Capabilities.from_statement(statement(system))
    assert caps.write_mode(configured) == mode


def test_per_type_facts() -> None:
    caps = Capabilities.from_statement(
        statement(conditional=False, versioning="no-version", restricted=("Flag",))
    )
    assert caps.writable("Goal")
    assert not caps.writable("Flag")
    assert not caps.conditional_create("Goal")
    assert not caps.versioned("Goal")
    assert caps.searchable("Goal", "_lastUpdated")
    assert not caps.searchable("Goal", "_sort")
    assert caps.blockers(["Goal", "Flag"], ["Patient"]) == []


def test_blockers_name_what_makes_sync_unsafe() -> None:
    doc = statement(conditional=False)
    goal = next(r for r in doc["rest"][0]["resource"] if r["type"] == "Goal")
    goal["interaction"] = [{"code": "read"}, {"code": "create"}]
    obs = next(r for r in doc["rest"][0]["resource"] if r["type"] == "Observation")
    obs["searchParam"] = [{"name": "code"}]
    doc["rest"][0]["resource"] = [r for r in doc["rest"][0]["resource"] if r["type"] != "Patient"]
    caps = Capabilities.from_statement(doc)
    assert caps.blockers(["Observation", "Goal", "Flag"], ["Patient"]) == [
        "Observation: no conditional create and no search by identifier: "
        "a repeated run could duplicate records",
        "Goal: interaction 'search-type' missing",
        "Goal: interaction 'update' missing",
        "Patient: search missing (records name people by identifier)",
    ]


def test_unknown_statement_keeps_todays_behaviour() -> None:
    caps = Capabilities.unknown()
    assert caps.write_mode() == "transaction"
    assert caps.conditional_create("Goal")
    assert caps.blockers(["Goal"], ["Patient"]) == []


def test_conditional_create_not_retried_when_server_ignores_if_none_exist(
    make_client, fake_time: FakeTime
) -> None:
    client, rec = make_client(sequence(fhir_json(503), fhir_json(201, GOAL)))
    client.honours_if_none_exist = False
    with pytest.raises(RetriableError):
        client.create(GOAL, if_none_exist="identifier=http://x|1")
    assert len(rec.requests) == 1
    assert fake_time.sleeps == []


def test_conditional_bundle_not_retried_when_server_ignores_if_none_exist(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(503), fhir_json(200, {"resourceType": "Bundle"})))
    client.honours_if_none_exist = False
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": GOAL,
                "request": {"method": "POST", "url": "Goal", "ifNoneExist": "identifier=x|1"},
            }
        ],
    }
    with pytest.raises(RetriableError):
        client.batch(bundle)
    assert len(rec.requests) == 1
