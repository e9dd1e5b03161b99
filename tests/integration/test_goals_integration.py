"""Goal plans through the real server: round trip, and what the EHR added survives us."""

from __future__ import annotations

from pathlib import Path

import httpx

from alliance_fhir.app.records import goal_records
from alliance_fhir.goals import Lifecycle, load_plans, transition

from .clinickit import make_api

FOREIGN_EXT = "http://ehr.example.org/fhir/StructureDefinition/care-team-color"
FOREIGN_ID = {"system": "http://ehr.example.org/goal-id", "value": "G-0042"}


def _comparable(plan: object) -> dict[str, object]:
    """A plan as data, without what only the server knows (its ids)."""
    data = plan.model_dump(mode="json")  # type: ignore[attr-defined]

    def strip(node: object) -> object:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "source_id"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(data)  # type: ignore[return-value]


def test_a_plan_round_trips_through_the_server_milestones_and_agreements_included(
    fhir_base_url: str, clinic: Path, tmp_path: Path
) -> None:
    source = clinic / "goals" / "plan-mrn-1002.yaml"  # milestones nested two deep
    (original,), problems = load_plans(source)
    assert problems == []
    with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
        report = api.push_goals([source])
        assert report.ok, report.result and report.result.failures
        (pulled,) = api.pull_plans("http://example-clinic.org/mrn|MRN-1002")
    assert _comparable(pulled) == _comparable(original)
    assert pulled.goals[0].milestones, "milestones came back"
    assert pulled.goals[0].agreement is not None


def test_what_the_ehr_added_to_a_goal_survives_our_status_update(
    fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    source = clinic / "goals" / "plan-mrn-1001.yaml"
    with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
        assert api.push_goals([source]).ok
        token = "http://alliance-fhir.org/fhir/identifier/goal|plan-1001-2024/sister"
        goal = fhir_http.get("/Goal", params={"identifier": token}).json()["entry"][0]["resource"]
        goal.setdefault("extension", []).append({"url": FOREIGN_EXT, "valueString": "teal"})
        goal["identifier"].append(FOREIGN_ID)
        put = fhir_http.put(
            f"/Goal/{goal['id']}", json=goal, headers={"Content-Type": "application/fhir+json"}
        )
        assert put.status_code == 200, put.text
        # The clinic's plan file moves the goal on: accepted -> active.
        text = source.read_text()
        head, sister = text.split("key: sister", 1)
        assert "lifecycle_status: accepted" in sister
        sister = sister.replace(
            "lifecycle_status: accepted",
            "lifecycle_status: active\n    achievement_status: in-progress",
            1,
        )
        source.write_text(head + "key: sister" + sister)
        report = api.push_goals([source])
        assert report.problems == []
        assert report.ok, report.result and report.result.failures
        assert report.result is not None
        assert report.result.counts["updated"] >= 1
    served = fhir_http.get(f"/Goal/{goal['id']}").json()
    assert served["lifecycleStatus"] == "active"
    assert {"url": FOREIGN_EXT, "valueString": "teal"} in served["extension"]
    assert FOREIGN_ID in served["identifier"]


def test_a_goal_made_in_the_ehr_is_read_updated_and_never_duplicated(
    fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    source = clinic / "goals" / "plan-mrn-1003.yaml"
    with make_api(fhir_base_url, tmp_path / "s.sqlite3") as api:
        assert api.push_goals([source]).ok
        patient = fhir_http.get(
            "/Patient", params={"identifier": "http://example-clinic.org/mrn|MRN-1003"}
        ).json()["entry"][0]["resource"]
        ehr_goal = {
            "resourceType": "Goal",
            "extension": [{"url": FOREIGN_EXT, "valueString": "amber"}],
            "identifier": [FOREIGN_ID],
            "lifecycleStatus": "proposed",
            "description": {"text": "Sleep through the night most nights"},
            "subject": {"reference": f"Patient/{patient['id']}"},
        }
        created = fhir_http.post(
            "/Goal", json=ehr_goal, headers={"Content-Type": "application/fhir+json"}
        )
        assert created.status_code == 201, created.text
        goal_id = created.json()["id"]
        # The EHR links its goal into our care plan.
        cp = fhir_http.get("/CarePlan", params={"subject": f"Patient/{patient['id']}"}).json()
        careplan = cp["entry"][0]["resource"]
        careplan["goal"].append({"reference": f"Goal/{goal_id}"})
        assert (
            fhir_http.put(
                f"/CarePlan/{careplan['id']}",
                json=careplan,
                headers={"Content-Type": "application/fhir+json"},
            ).status_code
            == 200
        )

        (plan,) = api.pull_plans(f"Patient/{patient['id']}")
        ehr = next(g for g in plan.goals if g.source_id == goal_id)
        assert ehr.client_words == "Sleep through the night most nights"
        moved = transition(ehr, Lifecycle("accepted"))
        plan = plan.model_copy(update={"goals": [moved if g is ehr else g for g in plan.goals]})
        report = api.run(goal_records([plan], api.settings), command="push goals")
        assert report.ok, report.result and report.result.failures
    served = fhir_http.get(f"/Goal/{goal_id}").json()
    assert served["lifecycleStatus"] == "accepted"
    assert {"url": FOREIGN_EXT, "valueString": "amber"} in served["extension"]
    total = fhir_http.get(
        "/Goal", params={"subject": f"Patient/{patient['id']}", "_summary": "count"}
    ).json()["total"]
    assert total == len(plan.goals) + sum(len(g.milestones) for g in plan.goals)
