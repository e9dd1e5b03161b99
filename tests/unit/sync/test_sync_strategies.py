"""Write strategies without a transaction: dependency order and identifier lookups."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from alliance_fhir.adapters.record import Desired
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.fhir import Capabilities, WriteResult
from alliance_fhir.sync.plan import Action
from alliance_fhir.sync.strategies import (
    WritePolicy,
    check_duplicates,
    find_existing,
    waves,
)

NS = "http://x/id"


def record(kind: str, key: str, rtype: str, refs: tuple[str, ...] = ()) -> Desired:
    resource: dict[str, Any] = {
        "resourceType": rtype,
        "identifier": [{"system": f"{NS}/{kind}", "value": key}],
    }
    if refs:
        resource["focus"] = [{"reference": r} for r in refs]
    return Desired(kind, key, resource, f"identifier={NS}/{kind}|{key}", group="g")


def test_waves_follow_references_and_break_a_cycle() -> None:
    qr = record("qr", "1", "QuestionnaireResponse")
    score = record("score", "1", "Observation", (qr.uuid,))
    goal_placeholder = record("goal", "1", "Goal")
    gas = record("gas", "1", "Observation", (goal_placeholder.uuid,))
    goal = record("goal", "1", "Goal", (gas.uuid,))  # Goal <-> GAS Observation: a cycle
    actions = [Action("create", d, None) for d in (score, qr, goal, gas)]
    known: dict[str, str] = {}
    steps: list[tuple[list[str], list[str], list[Any]]] = []
    for ready, deferred in waves(actions, known):
        steps.append(
            (
                [a.desired.kind for a in ready],
                [a.desired.kind for a in deferred],
                [a.desired.resource.get("focus") for a in ready],
            )
        )
        for a in ready:
            known[a.desired.uuid] = f"{a.desired.resource_type}/{a.desired.kind}"
    assert steps == [
        (["qr"], [], [None]),
        (["score"], [], [[{"reference": qr.uuid}]]),
        (["goal"], ["goal"], [None]),  # created without its open reference, updated later
        (["gas"], [], [[{"reference": goal.uuid}]]),
    ]


class SearchOnly:
    """A client whose search answers from a list of resources, recording the queries."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources
        self.queries: list[tuple[str, dict[str, str], dict[str, str]]] = []

    def search(
        self, resource_type: str, params: Mapping[str, str], *, headers: Any = None
    ) -> Iterator[dict[str, Any]]:
        self.queries.append((resource_type, dict(params), dict(headers or {})))
        wanted = set(params["identifier"].split(","))
        for res in self.resources:
            tokens = {f"{i['system']}|{i['value']}" for i in res["identifier"]}
            if res["resourceType"] == resource_type and tokens & wanted:
                yield res

    def batch(self, bundle: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError

    def create(self, resource: Any, *, if_none_exist: Any = None) -> WriteResult:
        raise AssertionError

    def update(self, resource: Any, *, if_match: Any = None) -> WriteResult:
        raise AssertionError


def test_lookup_is_batched_uncached_and_finds_duplicates() -> None:
    records = [record("goal", str(n), "Goal") for n in range(25)]
    on_server = [
        {"resourceType": "Goal", "id": "a", "identifier": records[3].resource["identifier"]},
        {"resourceType": "Goal", "id": "b", "identifier": records[7].resource["identifier"]},
        {"resourceType": "Goal", "id": "c", "identifier": records[7].resource["identifier"]},
    ]
    client = SearchOnly(on_server)
    found = find_existing(client, records)
    assert found == {records[3].uuid: ["a"], records[7].uuid: ["b", "c"]}
    assert [len(q[1]["identifier"].split(",")) for q in client.queries] == [20, 5]
    assert {q[2]["Cache-Control"] for q in client.queries} == {"no-cache"}
    with pytest.raises(ConfigError, match=r"goal/7: Goal/b, c"):
        check_duplicates(records, found)


def test_policy_from_a_server_without_conditional_create_or_transactions() -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "interaction": [{"code": "batch"}],
                "resource": [
                    {
                        "type": t,
                        "interaction": [{"code": c} for c in ("create", "update", "search-type")],
                        "conditionalCreate": t != "Goal",
                    }
                    for t in ("Goal", "Observation", "Questionnaire")
                ],
            }
        ],
    }
    policy = WritePolicy.from_capabilities(Capabilities.from_statement(statement))
    assert policy.mode == "batch"
    assert "Goal" in policy.lookup_types
    assert "Observation" not in policy.lookup_types
    assert policy.skip_types == frozenset({"CodeSystem", "Flag"})
    assert not policy.trusts_if_none_exist()


class CanonicalSearch:
    """A client answering ``url``/``version`` searches the FHIR way: each parameter's
    comma-separated values OR-ed, the parameters AND-ed."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources
        self.queries: list[dict[str, str]] = []

    def search(
        self, resource_type: str, params: Mapping[str, str], *, headers: Any = None
    ) -> Iterator[dict[str, Any]]:
        self.queries.append(dict(params))
        for res in self.resources:
            if res["resourceType"] == resource_type and all(
                str(res.get(n)) in v.split(",")
                for n, v in params.items()
                if n in ("url", "version")
            ):
                yield res


def test_canonical_lookups_share_one_search_and_match_exactly() -> None:
    def q(name: str, version: str) -> Desired:
        resource = {"resourceType": "Questionnaire", "url": f"{NS}/{name}", "version": version}
        search = f"url={NS}/{name}&version={version}"
        return Desired("questionnaire", name, resource, search, group="g")

    records = [q("a", "1.0.0"), q("b", "2.0.0"), q("c", "1.0.0")]
    on_server = [
        {"resourceType": "Questionnaire", "id": "1", "url": f"{NS}/a", "version": "1.0.0"},
        # matches the OR-ed search (b and 1.0.0 are both asked for) but is no record's
        {"resourceType": "Questionnaire", "id": "2", "url": f"{NS}/b", "version": "1.0.0"},
        {"resourceType": "Questionnaire", "id": "3", "url": f"{NS}/c", "version": "1.0.0"},
        {"resourceType": "Questionnaire", "id": "4", "url": f"{NS}/c", "version": "1.0.0"},
    ]
    client = CanonicalSearch(on_server)
    found = find_existing(client, records)
    assert found == {records[0].uuid: ["1"], records[2].uuid: ["3", "4"]}
    assert len(client.queries) == 1
    assert client.queries[0]["url"] == f"{NS}/a,{NS}/b,{NS}/c"
    assert client.queries[0]["version"] == "1.0.0,2.0.0"
    with pytest.raises(ConfigError, match=r"questionnaire/c: Questionnaire/3, 4"):
        check_duplicates(records, found)


def test_a_canonical_value_with_a_comma_is_searched_alone() -> None:
    resource = {"resourceType": "Questionnaire", "url": f"{NS}/a,b", "version": "1"}
    odd = Desired("questionnaire", "odd", resource, f"url={NS}/a,b&version=1", group="g")
    plain = {"resourceType": "Questionnaire", "url": f"{NS}/c", "version": "1"}
    other = Desired("questionnaire", "c", plain, f"url={NS}/c&version=1", group="g")
    client = CanonicalSearch([])
    assert find_existing(client, [odd, other]) == {}
    assert client.queries == [
        {"url": f"{NS}/a,b", "version": "1"},
        {"url": f"{NS}/c", "version": "1", "_count": "50", "_elements": "url,version"},
    ]
