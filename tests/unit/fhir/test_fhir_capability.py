"""The capability check tells an operator, before any sync, what the server lacks."""

from __future__ import annotations

import copy

import httpx
import pytest
from fhirkit import fhir_json, outcome, sequence

from alliance_fhir.exceptions import FatalError
from alliance_fhir.fhir import (
    REQUIRED_INTERACTIONS,
    Capabilities,
    check_server,
    missing_capabilities,
    probe,
    statement_to_write,
)
from alliance_fhir.fhir.capability import PROBE_ELEMENTS, READ_ELEMENTS


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


# -- the statement a sync decides by: cut to what we read when the server can ----------


def _with_search_params(statement: dict) -> dict:
    for res in statement["rest"][0]["resource"]:
        res["searchParam"] = [{"name": "identifier"}, {"name": "_lastUpdated"}]
    return statement


def _elements_asked(request: httpx.Request) -> str | None:
    return request.url.params.get("_elements")


def test_a_server_that_cuts_the_statement_is_asked_once(make_client) -> None:
    cut = _with_search_params(full_statement()) | {"meta": {"tag": [{"code": "SUBSETTED"}]}}
    client, rec = make_client(sequence(fhir_json(200, cut)))
    assert statement_to_write(client) == cut
    assert [_elements_asked(r) for r in rec.requests] == [",".join(READ_ELEMENTS)]


def test_a_server_that_ignores_elements_gives_the_whole_statement_at_once(make_client) -> None:
    whole = _with_search_params(full_statement()) | {"text": {"status": "generated"}}
    client, rec = make_client(sequence(fhir_json(200, whole)))
    assert statement_to_write(client) == whole
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    "lacks",
    ["rest", "fhirVersion", "system interactions", "type interactions", "search parameters"],
)
def test_an_answer_lacking_what_we_read_is_followed_by_the_plain_request(
    make_client, lacks: str
) -> None:
    """A server keeping only top-level elements (or cutting otherwise than HAPI) answers
    without parts we read: judging the server on that answer would refuse it or write it
    wrongly, so the whole statement is asked for."""
    whole = _with_search_params(full_statement())
    cut = copy.deepcopy(whole)
    rest = cut["rest"][0]
    if lacks == "rest":
        del cut["rest"]
    elif lacks == "fhirVersion":
        del cut["fhirVersion"]
    elif lacks == "system interactions":
        del rest["interaction"]
    for res in rest["resource"]:
        if lacks == "type interactions":
            del res["interaction"]
        if lacks == "search parameters":
            del res["searchParam"]
    client, rec = make_client(sequence(fhir_json(200, cut), fhir_json(200, whole)))
    assert statement_to_write(client) == whole
    assert [_elements_asked(r) for r in rec.requests] == [",".join(READ_ELEMENTS), None]
    assert Capabilities.from_statement(whole).write_mode() == "transaction"


def test_a_server_refusing_elements_on_metadata_is_asked_plainly(make_client) -> None:
    whole = _with_search_params(full_statement())
    client, rec = make_client(
        sequence(fhir_json(400, outcome("unknown parameter _elements")), fhir_json(200, whole))
    )
    assert statement_to_write(client) == whole
    assert [_elements_asked(r) for r in rec.requests] == [",".join(READ_ELEMENTS), None]


def test_credentials_refused_stay_an_error(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(401, outcome("no token"))))
    with pytest.raises(FatalError) as caught:
        statement_to_write(client)
    assert caught.value.status == 401
    assert len(rec.requests) == 1


def test_a_probe_asks_for_the_fhir_version_only(make_client) -> None:
    """A daemon probes every cycle: a few hundred bytes, not the whole statement."""
    client, rec = make_client(
        sequence(fhir_json(200, {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}))
    )
    probe(client)
    assert [_elements_asked(r) for r in rec.requests] == [",".join(PROBE_ELEMENTS)]
    assert [r.url.path for r in rec.requests] == ["/fhir/metadata"]


def test_a_probe_of_a_server_refusing_elements_asks_plainly(make_client) -> None:
    client, rec = make_client(
        sequence(
            fhir_json(400, outcome("unknown parameter _elements")),
            fhir_json(200, full_statement()),
        )
    )
    probe(client)
    assert [_elements_asked(r) for r in rec.requests] == ["fhirVersion", None]


@pytest.mark.parametrize("status", [401, 403])
def test_a_probe_refused_for_credentials_is_an_error(make_client, status: int) -> None:
    client, rec = make_client(sequence(fhir_json(status, outcome("no token"))))
    with pytest.raises(FatalError) as caught:
        probe(client)
    assert caught.value.status == status
    assert len(rec.requests) == 1
