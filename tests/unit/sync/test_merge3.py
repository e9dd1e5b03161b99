"""The three-way merge (sync/merge3.py) on its own: the conflict matrix for each policy,
list fields as sets, and the update decision over real Goal and CarePlan JSON."""

from __future__ import annotations

from typing import Any

import pytest

from alliance_fhir.adapters.goals import lay_fields, owned_fields, set_keys
from alliance_fhir.sync.merge3 import MergeRules, Policy, merge3, merged_update, policy_of

POLICIES: tuple[Policy, ...] = ("skip", "ehr-wins", "ours-wins")


def ref(item: Any) -> str:
    return str(item["reference"])


# The matrix: (base, theirs, ours) -> merged value and whether it is a conflict.


@pytest.mark.parametrize("policy", POLICIES)
def test_a_field_only_the_ehr_changed_keeps_the_ehrs_value(policy: Policy) -> None:
    out = merge3({"status": "active"}, {"status": "on-hold"}, {"status": "active"}, policy=policy)
    assert out.fields == {"status": "on-hold"}
    assert out.conflicts == ()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_field_only_we_changed_takes_ours(policy: Policy) -> None:
    out = merge3({"status": "active"}, {"status": "active"}, {"status": "completed"}, policy=policy)
    assert out.fields == {"status": "completed"}
    assert out.conflicts == ()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_field_both_changed_the_same_way_is_no_conflict(policy: Policy) -> None:
    out = merge3({"status": "active"}, {"status": "done"}, {"status": "done"}, policy=policy)
    assert out.fields == {"status": "done"}
    assert out.conflicts == ()


@pytest.mark.parametrize(
    ("policy", "value"),
    [("skip", "on-hold"), ("ehr-wins", "on-hold"), ("ours-wins", "completed")],
)
def test_a_field_both_changed_differently_is_a_conflict_settled_by_the_policy(
    policy: Policy, value: str
) -> None:
    out = merge3(
        {"status": "active", "title": "a"},
        {"status": "on-hold", "title": "a"},
        {"status": "completed", "title": "b"},
        policy=policy,
    )
    assert out.conflicts == ("status",)
    assert out.fields == {"status": value, "title": "b"}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_field_the_ehr_removed_stays_removed_when_we_did_not_change_it(policy: Policy) -> None:
    out = merge3({"note": "x", "a": 1}, {"a": 1}, {"note": "x", "a": 1}, policy=policy)
    assert out.fields == {"a": 1}


@pytest.mark.parametrize("policy", POLICIES)
def test_list_additions_from_both_sides_are_kept_and_removals_honoured(policy: Policy) -> None:
    base = {"goal": [{"reference": "Goal/1"}, {"reference": "Goal/2"}]}
    theirs = {"goal": [{"reference": "Goal/1"}, {"reference": "Goal/2"}, {"reference": "Goal/9"}]}
    ours = {"goal": [{"reference": "Goal/2"}, {"reference": "Goal/3"}]}  # 1 removed, 3 added
    out = merge3(base, theirs, ours, policy=policy, sets={"goal": ref})
    assert out.fields == {
        "goal": [{"reference": "Goal/2"}, {"reference": "Goal/3"}, {"reference": "Goal/9"}]
    }
    assert out.conflicts == ()


@pytest.mark.parametrize("policy", POLICIES)
def test_a_list_item_the_ehr_removed_is_not_put_back(policy: Policy) -> None:
    base = {"goal": [{"reference": "Goal/1"}, {"reference": "Goal/2"}]}
    theirs = {"goal": [{"reference": "Goal/2"}]}
    out = merge3(base, theirs, base, policy=policy, sets={"goal": ref})
    assert out.fields == {"goal": [{"reference": "Goal/2"}]}


@pytest.mark.parametrize(("policy", "due"), [("ehr-wins", "2025"), ("ours-wins", "2026")])
def test_one_list_item_both_changed_is_a_conflict_of_that_field(policy: Policy, due: str) -> None:
    def target(when: str) -> dict[str, Any]:
        return {"measure": {"text": "walks"}, "dueDate": when}

    def key(item: Any) -> str:
        return str(item["measure"])

    out = merge3(
        {"target": [target("2024")]},
        {"target": [target("2025")]},
        {"target": [target("2026")]},
        policy=policy,
        sets={"target": key},
    )
    assert out.conflicts == ("target",)
    assert out.fields == {"target": [target(due)]}


def test_the_older_overwrite_setting_means_ours_wins_and_unknown_ones_fail() -> None:
    assert policy_of("overwrite") == "ours-wins"
    assert [policy_of(p) for p in POLICIES] == list(POLICIES)
    with pytest.raises(ValueError, match="unknown conflict policy"):
        policy_of("last-writer-wins")


# The update decision over real resources (the rules the app configures for goals).


def _rules(rtype: str) -> MergeRules:
    return MergeRules(owned=owned_fields, lay=lay_fields, sets=set_keys(rtype))


def _goal(status: str = "active", text: str = "Walk the dog") -> dict[str, Any]:
    return {
        "resourceType": "Goal",
        "identifier": [{"system": "http://alliance-fhir.test/goal", "value": "g1"}],
        "lifecycleStatus": status,
        "description": {"text": text},
        "subject": {"reference": "Patient/p1"},
    }


def _on_server(resource: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**resource, "id": "17", "meta": {"versionId": "3"}, **changes}


@pytest.mark.parametrize("policy", POLICIES)
def test_an_update_that_changes_nothing_on_the_server_is_not_sent(policy: Policy) -> None:
    sent = _goal()
    current = _on_server(sent, statusReason="Client in hospital", lifecycleStatus="on-hold")
    update = merged_update(owned_fields(sent), current, _goal(), _rules("Goal"), policy)
    assert update.resource is None
    assert update.unchanged
    assert update.conflicts == ()


def test_under_skip_a_conflicting_goal_is_not_written_and_names_the_field() -> None:
    sent = _goal()
    current = _on_server(sent, lifecycleStatus="on-hold")
    ours = _goal(status="completed", text="Walk the dog daily")
    update = merged_update(owned_fields(sent), current, ours, _rules("Goal"), "skip")
    assert update.resource is None
    assert not update.unchanged
    assert update.conflicts == ("lifecycleStatus",)


@pytest.mark.parametrize(
    ("policy", "status"), [("ehr-wins", "on-hold"), ("ours-wins", "completed")]
)
def test_a_resolved_conflict_writes_our_other_changes_and_keeps_what_the_ehr_added(
    policy: Policy, status: str
) -> None:
    sent = _goal()
    extra = {"url": "http://ehr.example.org/color", "valueString": "teal"}
    current = _on_server(sent, lifecycleStatus="on-hold", extension=[extra])
    ours = _goal(status="completed", text="Walk the dog daily")
    update = merged_update(owned_fields(sent), current, ours, _rules("Goal"), policy)
    assert update.resource is not None
    assert update.resource["lifecycleStatus"] == status
    assert update.resource["description"] == {"text": "Walk the dog daily"}
    assert update.resource["extension"] == [extra]
    assert update.resource["id"] == "17"
    assert update.base == owned_fields(ours), "the next base is what we wanted, not theirs"


def test_without_a_base_the_servers_content_is_the_base_and_ours_wins_every_difference() -> None:
    current = _on_server(_goal(), lifecycleStatus="on-hold")
    update = merged_update(None, current, _goal(text="New words"), _rules("Goal"), "skip")
    assert update.adopted
    assert update.conflicts == ()
    assert update.resource is not None
    assert update.resource["lifecycleStatus"] == "active"
    assert update.resource["description"] == {"text": "New words"}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_goal_link_the_ehr_added_to_our_careplan_stays(policy: Policy) -> None:
    def plan(*goals: str, title: str = "Mornings") -> dict[str, Any]:
        return {
            "resourceType": "CarePlan",
            "identifier": [{"system": "http://alliance-fhir.test/careplan", "value": "p"}],
            "status": "active",
            "intent": "plan",
            "title": title,
            "subject": {"reference": "Patient/p1"},
            "goal": [{"reference": g} for g in goals],
        }

    sent = plan("Goal/1")
    current = _on_server(sent, goal=[{"reference": "Goal/1"}, {"reference": "Goal/99"}])
    ours = plan("Goal/1", title="Getting my mornings back")
    update = merged_update(owned_fields(sent), current, ours, _rules("CarePlan"), policy)
    assert update.resource is not None
    assert update.resource["goal"] == [{"reference": "Goal/1"}, {"reference": "Goal/99"}]
    assert update.resource["title"] == "Getting my mornings back"
