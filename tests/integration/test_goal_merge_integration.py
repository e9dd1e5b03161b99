"""A clinician edits our Goal and CarePlan in the EHR, then the clinic pushes a changed plan:
the three-way merge against the real server, under each conflict policy (issue #14)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

NS = "http://alliance-fhir.org/fhir/identifier"
GOAL = f"{NS}/goal|plan-1001-2024/sister"
PLAN = f"{NS}/careplan|plan-1001-2024"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
OLD_WORDS = "Call my sister on Sundays instead of waiting for her to call."
NEW_WORDS = "Call my sister every Sunday evening."


def _one(http: httpx.Client, rtype: str, token: str) -> dict[str, Any]:
    bundle = http.get(f"/{rtype}", params={"identifier": token}).json()
    [entry] = bundle["entry"]
    return dict(entry["resource"])


def _put(http: httpx.Client, resource: dict[str, Any]) -> None:
    resp = http.put(
        f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON
    )
    assert resp.status_code == 200, resp.text


def _clinician_edits(http: httpx.Client) -> str:
    """Our Goal on hold; an EHR Goal linked from our CarePlan. Returns the link."""
    goal = _one(http, "Goal", GOAL)
    goal["lifecycleStatus"] = "on-hold"
    _put(http, goal)
    ehr_goal = {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Sleep before midnight"},
        "subject": goal["subject"],
    }
    created = http.post("/Goal", json=ehr_goal, headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    link = f"Goal/{created.json()['id']}"
    plan = _one(http, "CarePlan", PLAN)
    plan["goal"] = [*plan["goal"], {"reference": link}]
    _put(http, plan)
    return link


def _change_plan(source: Path) -> None:
    """The clinic's plan file moves the sister goal on (accepted -> active) and rewords it."""
    text = source.read_text()
    head, sister = text.split("key: sister", 1)
    assert OLD_WORDS in sister
    sister = sister.replace(OLD_WORDS, NEW_WORDS, 1)
    sister = sister.replace(
        "lifecycle_status: accepted",
        "lifecycle_status: active\n    achievement_status: in-progress",
        1,
    )
    source.write_text(head + "key: sister" + sister)


@pytest.mark.parametrize("policy", ["skip", "ehr-wins", "ours-wins"])
def test_a_clinicians_edits_are_never_overwritten_silently(
    policy: str, fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    source = clinic / "goals" / "plan-mrn-1001.yaml"
    settings = Settings(
        server_url=fhir_base_url, state_path=tmp_path / "s.sqlite3", conflict_policy=policy
    )
    with AllianceFhir(settings) as api:
        assert api.push_goals([source]).ok
        link = _clinician_edits(fhir_http)
        _change_plan(source)

        report = api.push_goals([source])
        status = api.status()

    assert report.problems == []
    assert report.result is not None
    result = report.result
    goal = _one(fhir_http, "Goal", GOAL)
    plan = _one(fhir_http, "CarePlan", PLAN)
    assert {"reference": link} in plan["goal"], "the EHR's link is kept under every policy"
    if policy == "skip":
        assert result.counts["conflict"] == 1
        assert result.failures == ["goal/plan-1001-2024/sister: conflict (lifecycleStatus)"]
        assert goal["lifecycleStatus"] == "on-hold"
        assert goal["description"]["text"] == OLD_WORDS, "nothing written for that record"
        [conflict] = status.conflicts
        assert conflict.conflict_fields == ("lifecycleStatus",)
    elif policy == "ehr-wins":
        assert result.ok, result.failures
        assert result.counts["conflict"] == 0
        assert goal["lifecycleStatus"] == "on-hold"
        assert goal["description"]["text"] == NEW_WORDS
        assert status.conflicts == []
    else:
        assert result.ok, result.failures
        assert goal["lifecycleStatus"] == "active"
        assert goal["description"]["text"] == NEW_WORDS


def test_a_fresh_state_file_finds_our_plans_unchanged_and_writes_nothing(
    fhir_base_url: str, clinic: Path, tmp_path: Path
) -> None:
    sources = sorted((clinic / "goals").iterdir())
    with AllianceFhir(Settings(server_url=fhir_base_url, state_path=tmp_path / "a.db")) as api:
        assert api.push_goals(sources).ok
    with AllianceFhir(Settings(server_url=fhir_base_url, state_path=tmp_path / "b.db")) as api:
        report = api.push_goals(sources)
    assert report.result is not None
    assert report.ok, report.result.failures
    assert report.result.counts["updated"] == 0
    assert report.result.counts["created"] == 0
