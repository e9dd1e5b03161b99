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
