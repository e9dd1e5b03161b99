"""The capability check tells an operator, before any sync, what the server lacks."""

from __future__ import annotations

import copy

from fhirkit import fhir_json, sequence

from alliance_fhir.fhir import REQUIRED_INTERACTIONS, check_server, missing_capabilities


def full_statement() -> dict:
    resources = [
        {
            "type": rtype,
            "interaction": [{"code": c} for c in sorted(codes)],
            "conditionalCreate": True,
            "conditionalUpdate": True,
        }
        for rtype, codes in REQUIRED_INTERACTIONS.items()
    ]
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }


def test_complete_server_has_nothing_missing() -> None:
    assert missing_capabilities(full_statement(), require_conditional=True) == []


def test_missing_interaction_resource_and_system_are_reported() -> None:
    statement = full_statement()
    rest = statement["rest"][0]
    goal = next(r for r in rest["resource"] if r["type"] == "Goal")
    goal["interaction"] = [{"code": "read"}, {"code": "search-type"}, {"code": "create"}]
    rest["resource"] = [r for r in rest["resource"] if r["type"] != "Flag"]
    rest["interaction"] = [{"code": "search-system"}]
    missing = missing_capabilities(statement)
    assert missing == [
        "Goal: interaction 'update' missing",
        "Flag: not supported by the server",
        "system: none of batch / transaction supported",
    ]


def test_batch_alone_satisfies_system_need() -> None:
    statement = full_statement()
    statement["rest"][0]["interaction"] = [{"code": "batch"}]
    assert missing_capabilities(statement) == []


def test_wrong_fhir_version_and_undeclared_conditionals() -> None:
    statement = copy.deepcopy(full_statement())
    statement["fhirVersion"] = "4.3.0"
    for res in statement["rest"][0]["resource"]:
        if res["type"] == "Task":
            del res["conditionalUpdate"]
    missing = missing_capabilities(statement, require_conditional=True)
    assert missing[0].startswith("fhirVersion is 4.3.0")
    assert "Task: conditional update (conditionalUpdate) not declared" in missing
    assert len(missing) == 2


def test_custom_requirements_map() -> None:
    missing = missing_capabilities(
        full_statement(), {"Questionnaire": {"delete", "read"}}, system=[{"history-system"}]
    )
    assert missing == [
        "Questionnaire: interaction 'delete' missing",
        "system: none of history-system supported",
    ]


def test_check_server_reads_metadata(make_client) -> None:
    statement = full_statement()
    statement["rest"][0]["resource"] = statement["rest"][0]["resource"][1:]
    client, rec = make_client(sequence(fhir_json(200, statement)))
    assert check_server(client) == ["Questionnaire: not supported by the server"]
    assert rec.requests[0].url.path == "/fhir/metadata"
