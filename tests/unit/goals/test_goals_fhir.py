"""Goal plans <-> FHIR R4: round trips, golden output, EHR-made goals, merging."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import pytest

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.goals import (
    GOAL_ACCEPTANCE,
    GoalOptions,
    Links,
    References,
    goal_from_fhir,
    merge_onto_server,
    plan_from_fhir,
    plan_to_fhir,
)
from alliance_fhir.adapters.record import Desired
from alliance_fhir.goals import Lifecycle, Plan, load_plans

from .conftest import GOLDEN, LEAD, OTHER, PATIENT, example_files, load_example

RESOLVED = References(
    patients={
        PATIENT: {"reference": "Patient/501"},
        "http://example-clinic.org/mrn|MRN-1002": {"reference": "Patient/502"},
        "http://example-clinic.org/mrn|MRN-1003": {"reference": "Patient/503"},
        "http://example-clinic.org/mrn|MRN-1004": {"reference": "Patient/504"},
    },
    practitioners={LEAD: {"reference": "Practitioner/71"}, OTHER: {"reference": "Practitioner/72"}},
)


def split(
    entries: list[Desired],
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    careplan = next(e.resource for e in entries if e.kind == "careplan")
    goals = [e.resource for e in entries if e.kind == "goal"]
    observations = [e.resource for e in entries if e.resource_type == "Observation"]
    return careplan, goals, observations


def as_server_would_store(entries: list[Desired]) -> list[Desired]:
    """Give every resource an id and rewrite urn:uuid references to ``Type/id``."""
    ids = {e.uuid: f"{e.resource_type}/{n}" for n, e in enumerate(entries, start=900)}
    text = json.dumps([e.resource for e in entries])
    for urn, literal in ids.items():
        text = text.replace(urn, literal)
    stored = json.loads(text)
    out = []
    for entry, resource in zip(entries, stored, strict=True):
        resource = {
            "resourceType": resource.pop("resourceType"),
            "id": ids[entry.uuid].split("/")[1],
            **resource,
        }
        out.append(
            Desired(
                entry.kind,
                entry.key,
                resource,
                entry.search,
                entry.group,
                entry.update_mode,
                uuid=entry.uuid,
            )
        )
    return out


def example_plans() -> list[Plan]:
    plans = []
    for path in example_files():
        found, problems = load_plans(path)
        assert problems == []
        plans += found
    return plans


@pytest.mark.parametrize("plan", example_plans(), ids=lambda p: p.key)
@pytest.mark.parametrize("links", ["urn", "conditional"])
@pytest.mark.parametrize("refs", [References(), RESOLVED], ids=["logical", "resolved"])
def test_round_trip(plan: Plan, links: Links, refs: References) -> None:
    options = GoalOptions(links=links)
    entries = plan_to_fhir(plan, refs, options)
    assert plan_from_fhir(*split(entries), refs=refs, options=options) == plan


@pytest.mark.parametrize("plan", example_plans(), ids=lambda p: p.key)
def test_round_trip_through_server_ids(plan: Plan) -> None:
    stored = as_server_would_store(plan_to_fhir(plan, RESOLVED))
    back = plan_from_fhir(*split(stored), refs=RESOLVED)
    # the server's ids come back as source_id; otherwise the plan is the same
    assert back.source_id is not None
    assert all(g.source_id for g in back.all_goals())
    cleared = back.model_copy(update={"source_id": None}, deep=True)
    for goal in cleared.all_goals():
        goal.source_id = None
    assert cleared == plan
    # pushing what we pulled references the stored goals directly
    again = plan_to_fhir(back, RESOLVED)
    careplan = split(again)[0]
    assert all(ref["reference"].startswith("Goal/9") for ref in careplan["goal"])


def test_every_output_is_valid_and_byte_stable() -> None:
    for plan in example_plans():
        first = plan_to_fhir(plan)
        second = plan_to_fhir(plan.model_copy(deep=True))
        for a, b in zip(first, second, strict=True):
            fhirjson.validate(a.resource)
            assert fhirjson.dumps(a.resource) == fhirjson.dumps(b.resource)
            assert a.uuid == b.uuid


def golden_text(plan: Plan) -> str:
    entries = plan_to_fhir(plan)
    listing = [
        {"kind": e.kind, "key": e.key, "fullUrl": e.uuid, "resource": e.resource} for e in entries
    ]
    return fhirjson.dumps({"entries": listing}, indent=2) + "\n"  # type: ignore[arg-type]


def test_golden_fhir_json() -> None:
    golden = GOLDEN / "plan-mrn-1001.json"
    text = golden_text(load_example("plan-mrn-1001.yaml"))
    if os.environ.get("ALLIANCE_FHIR_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert text.encode("utf-8") == golden.read_bytes()


def test_entries_shape() -> None:
    plan = load_example("plan-mrn-1001.yaml")
    entries = plan_to_fhir(plan)
    kinds = [e.kind for e in entries]
    assert kinds == ["goal"] * 4 + ["gas-rating"] * 2 + ["gas-summary"] * 2 + ["careplan"]
    walks = entries[0]
    assert walks.key == "plan-1001-2024/walks"
    assert walks.search == (
        "identifier=http://alliance-fhir.org/fhir/identifier/goal|plan-1001-2024/walks"
    )
    assert (walks.group, walks.update_mode) == ("plan:plan-1001-2024", "merge")
    assert [e.update_mode for e in entries].count("merge") == 5
    conditional = plan_to_fhir(plan, options=GoalOptions(links="conditional"))
    careplan = split(conditional)[0]
    assert careplan["goal"][0] == {"reference": f"Goal?{walks.search}"}


def test_agreement_and_milestones_in_fhir() -> None:
    plan = load_example("plan-mrn-1001.yaml")
    goal = plan_to_fhir(plan, RESOLVED)[0].resource
    acceptance = [e for e in goal["extension"] if e["url"] == GOAL_ACCEPTANCE]
    people = [e["extension"][0]["valueReference"] for e in acceptance]
    assert people == [{"reference": "Patient/501"}, {"reference": "Practitioner/71"}]
    assert goal["subject"] == {"reference": "Patient/501"}
    assert goal["expressedBy"] == {"reference": "Patient/501"}


def test_goal_made_in_the_ehr_is_tolerated() -> None:
    resource = {
        "resourceType": "Goal",
        "id": "77",
        "meta": {"versionId": "3"},
        "lifecycleStatus": "active",
        "description": {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "713458007",
                    "display": "Improving sleep",
                }
            ]
        },
        "subject": {"reference": "Patient/501"},
        "target": [{"detailInteger": 6, "dueDate": "2024-06-01"}],
        "note": [
            {"text": "Discussed at intake.", "time": "2024-02-01T10:30:00+01:00"},
            {"text": "No date"},
        ],
        "expressedBy": {"reference": "Practitioner/71"},
    }
    goal = goal_from_fhir(resource, RESOLVED)
    assert goal.key == "ehr-77"
    assert goal.source_id == "77"
    assert goal.client_words == "Improving sleep"
    assert goal.coding[0].code == "713458007"
    assert goal.proposed_by == "clinician"
    assert goal.targets[0].value == 6
    assert [n.on is None for n in goal.notes] == [False, True]
    assert goal.achievement_status is None
    assert goal.agreement is None


def test_plan_from_a_careplan_made_in_the_ehr() -> None:
    careplan = {
        "resourceType": "CarePlan",
        "id": "40",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "http://ehr.example/fhir/Patient/501"},
        "author": {"reference": "Practitioner/71"},
        "goal": [{"reference": "Goal/77"}, {"reference": "Goal/404"}],
    }
    goal = {
        "resourceType": "Goal",
        "id": "77",
        "lifecycleStatus": "proposed",
        "description": {"text": "Get a library card"},
        "subject": {"reference": "Patient/501"},
    }
    plan = plan_from_fhir(careplan, [goal])
    assert plan.key == "ehr-40"
    assert plan.patient == "Patient/501"
    assert plan.clinicians == ["Practitioner/71"]
    assert [g.key for g in plan.goals] == ["ehr-77"]
    entries = plan_to_fhir(plan)
    assert entries[0].resource["id"] == "77"
    assert split(entries)[0]["goal"] == [{"reference": "Goal/77"}]


def server_copy(ours: dict[str, Any]) -> dict[str, Any]:
    server = copy.deepcopy(ours)
    server = {
        "resourceType": "Goal",
        "id": "900",
        "meta": {"versionId": "7"},
        **{k: v for k, v in server.items() if k != "resourceType"},
    }
    server["lifecycleStatus"] = "proposed"
    server["identifier"].append({"system": "http://ehr.example/goal-id", "value": "G-55"})
    server["extension"].append(
        {"url": "http://ehr.example/fhir/StructureDefinition/reviewed", "valueBoolean": True}
    )
    server["category"] = [{"text": "behavioral"}]
    server["note"].append({"text": "Added by the front desk."})
    return server


def test_merge_keeps_what_we_do_not_own() -> None:
    plan = load_example("plan-mrn-1001.yaml")
    ours = plan_to_fhir(plan, RESOLVED)[0].resource
    server = server_copy(ours)
    merged = merge_onto_server(server, ours)
    assert merged["lifecycleStatus"] == "active"
    assert merged["id"] == "900"
    assert merged["meta"] == {"versionId": "7"}
    assert {"system": "http://ehr.example/goal-id", "value": "G-55"} in merged["identifier"]
    assert ours["identifier"][0] in merged["identifier"]
    assert len(merged["identifier"]) == 2
    urls = [e["url"] for e in merged["extension"]]
    assert "http://ehr.example/fhir/StructureDefinition/reviewed" in urls
    assert len(merged["extension"]) == len(ours["extension"]) + 1
    assert merged["category"] == [{"text": "behavioral"}]
    assert merged["note"][-1] == {"text": "Added by the front desk."}
    assert len(merged["note"]) == len(ours["note"]) + 1
    assert list(merged)[:4] == ["resourceType", "id", "meta", "extension"]
    # merging again changes nothing
    assert fhirjson.dumps(merge_onto_server(merged, ours)) == fhirjson.dumps(merged)


def test_merge_removes_what_we_cleared() -> None:
    plan = load_example("plan-mrn-1001.yaml")
    ours = plan_to_fhir(plan)[0].resource
    server = server_copy(ours)
    ours = {k: v for k, v in ours.items() if k != "achievementStatus"}
    merged = merge_onto_server(server, ours)
    assert "achievementStatus" not in merged


def test_merged_pull_gives_back_our_plan_plus_foreign_note() -> None:
    plan = load_example("plan-mrn-1001.yaml")
    entries = plan_to_fhir(plan, RESOLVED)
    careplan, goals, observations = split(entries)
    goals[0] = merge_onto_server(server_copy(goals[0]), goals[0])
    back = plan_from_fhir(careplan, goals, observations, refs=RESOLVED)
    assert back.goals[0].lifecycle_status is Lifecycle.ACTIVE
    assert back.goals[0].notes[-1].text == "Added by the front desk."
    # and pushing that back does not duplicate the front desk's note
    again = plan_to_fhir(back, RESOLVED)[0].resource
    merged = merge_onto_server(goals[0], again)
    assert [n["text"] for n in merged["note"]].count("Added by the front desk.") == 1


def test_merge_careplan_and_observation() -> None:
    entries = plan_to_fhir(load_example("plan-mrn-1001.yaml"))
    careplan = split(entries)[0]
    server = {
        "resourceType": "CarePlan",
        "id": "5",
        "extension": [{"url": "http://ehr.example/x", "valueString": "k"}],
        "status": "draft",
        "intent": "plan",
        "subject": {"reference": "Patient/1"},
        "activity": [{"detail": {"status": "scheduled"}}],
    }
    merged = merge_onto_server(server, careplan)
    assert merged["status"] == "active"
    assert merged["activity"] == server["activity"]
    assert merged["extension"] == server["extension"]
    rating = next(e.resource for e in entries if e.kind == "gas-rating")
    stored = {k: v for k, v in rating.items() if k not in ("valueInteger", "effectiveDateTime")}
    stored.update(id="9", valueQuantity={"value": 3}, effectivePeriod={"start": "2024-01-01"})
    merged = merge_onto_server(stored, rating)
    assert "valueQuantity" not in merged
    assert "effectivePeriod" not in merged
    assert merged["valueInteger"] == rating["valueInteger"]
