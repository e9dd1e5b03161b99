"""Merged updates through the engine against the fake server: the clinician-edit scenario
under each policy, no-op updates, a 412 merged again, state from before bases were kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from synckit import FakeServer, careplan, goal

from alliance_fhir.adapters.goals import lay_fields, owned_fields, set_keys
from alliance_fhir.fhir import ReadResult
from alliance_fhir.sync.engine import MergeRules, SyncEngine
from alliance_fhir.sync.state import StateStore

EHR_LINK = {"reference": "Goal/ehr-7"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite3") as opened:
        yield opened


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def _engine(server: FakeServer, store: StateStore, policy: str = "skip") -> SyncEngine:
    rules = {
        "goal": MergeRules(owned=owned_fields, lay=lay_fields, sets=set_keys("Goal")),
        "careplan": MergeRules(owned=owned_fields, lay=lay_fields, sets=set_keys("CarePlan")),
    }
    return SyncEngine(server, store, concurrency=1, conflict_policy=policy, mergers=rules)


def _puts(server: FakeServer) -> list[str]:
    return [
        e["request"]["url"]
        for bundle in server.transactions
        for e in bundle["entry"]
        if e["request"]["method"] == "PUT"
    ]


def _clinician_edits(server: FakeServer) -> None:
    """In the EHR: our Goal put on hold, an EHR Goal linked from our CarePlan."""
    links = server.find("CarePlan", "p")["goal"]
    server.edit("Goal", "g1", lifecycleStatus="on-hold")
    server.edit("CarePlan", "p", goal=[*links, EHR_LINK])


def _changed_plan() -> list[Any]:
    """The clinic's next plan file: the goal reworded and completed, the plan retitled."""
    return [
        goal("g1", status="completed", text="Walk the dog every morning"),
        careplan("p", ["g1"], title="Getting my mornings back"),
    ]


def test_under_skip_a_both_sides_change_is_a_conflict_naming_the_field(
    server: FakeServer, store: StateStore
) -> None:
    assert _engine(server, store).run([goal("g1"), careplan("p", ["g1"])]).ok
    _clinician_edits(server)

    result = _engine(server, store).run(_changed_plan())

    assert result.summary() == {
        "created": 0,
        "updated": 1,
        "unchanged": 0,
        "conflict": 1,
        "rejected": 0,
    }
    assert result.failures == ["goal/g1: conflict (lifecycleStatus)"]
    served_goal = server.find("Goal", "g1")
    assert served_goal["lifecycleStatus"] == "on-hold"
    assert served_goal["description"] == {"text": "Walk the dog"}, "nothing written for it"
    plan = server.find("CarePlan", "p")
    assert EHR_LINK in plan["goal"]
    assert plan["title"] == "Getting my mornings back"
    [conflict] = store.conflicts()
    assert (conflict.kind, conflict.key, conflict.conflict_fields) == (
        "goal",
        "g1",
        ("lifecycleStatus",),
    )
    [letter] = store.open_dead_letters()
    assert letter.reason == "changed on the server and by us: lifecycleStatus; not overwritten"


def test_under_ehr_wins_the_ehrs_values_stay_and_our_other_changes_are_written(
    server: FakeServer, store: StateStore
) -> None:
    assert _engine(server, store, "ehr-wins").run([goal("g1"), careplan("p", ["g1"])]).ok
    _clinician_edits(server)

    result = _engine(server, store, "ehr-wins").run(_changed_plan())

    assert result.ok
    assert (result.counts["updated"], result.counts["conflict"]) == (2, 0)
    served_goal = server.find("Goal", "g1")
    assert served_goal["lifecycleStatus"] == "on-hold"
    assert served_goal["description"] == {"text": "Walk the dog every morning"}
    assert EHR_LINK in server.find("CarePlan", "p")["goal"]
    assert store.conflicts() == []


def test_under_ours_wins_ours_is_written_and_the_ehrs_added_link_kept(
    server: FakeServer, store: StateStore
) -> None:
    assert _engine(server, store, "ours-wins").run([goal("g1"), careplan("p", ["g1"])]).ok
    _clinician_edits(server)

    result = _engine(server, store, "ours-wins").run(_changed_plan())

    assert result.ok
    assert server.find("Goal", "g1")["lifecycleStatus"] == "completed"
    assert EHR_LINK in server.find("CarePlan", "p")["goal"]


def test_an_edit_only_the_ehr_made_is_never_reverted_by_our_next_change(
    server: FakeServer, store: StateStore
) -> None:
    assert _engine(server, store).run([goal("g1"), careplan("p", ["g1"])]).ok
    _clinician_edits(server)

    result = _engine(server, store).run([goal("g1", text="Walk the dog daily")])

    assert result.ok
    served = server.find("Goal", "g1")
    assert (served["lifecycleStatus"], served["description"]["text"]) == (
        "on-hold",
        "Walk the dog daily",
    )


def test_an_update_whose_merge_changes_nothing_sends_nothing_and_counts_unchanged(
    server: FakeServer, store: StateStore, tmp_path: Path
) -> None:
    assert _engine(server, store).run([goal("g1"), careplan("p", ["g1"])]).ok
    # the EHR adds something of its own; a fresh state file then meets our resources again
    server.edit("Goal", "g1", extension=[{"url": "http://ehr.example.org/c", "valueCode": "x"}])
    sent_before = len(server.transactions)

    with StateStore(tmp_path / "fresh.sqlite3") as fresh:
        result = _engine(server, fresh).run([goal("g1"), careplan("p", ["g1"])])
        again = _engine(server, fresh).run([goal("g1"), careplan("p", ["g1"])])

    assert result.summary() == {
        "created": 0,
        "updated": 0,
        "unchanged": 2,
        "conflict": 0,
        "rejected": 0,
    }
    assert _puts(server) == []
    assert len(server.transactions) == sent_before + 1, "only the conditional creates"
    assert again.counts["unchanged"] == 2
    assert len(server.transactions) == sent_before + 1


def test_a_412_on_a_merged_update_is_merged_again_on_the_new_version(
    server: FakeServer, store: StateStore
) -> None:
    assert _engine(server, store).run([goal("g1")]).ok
    raced = RacingServer(server)

    result = _engine(raced, store).run([goal("g1", text="Walk the dog daily")])  # type: ignore[arg-type]

    assert result.ok, result.failures
    assert result.summary()["updated"] == 1
    served = server.find("Goal", "g1")
    assert served["lifecycleStatus"] == "on-hold", "the edit that raced us is kept"
    assert served["description"] == {"text": "Walk the dog daily"}
    assert served["meta"]["versionId"] == "3"


def test_state_from_before_bases_were_kept_takes_the_server_as_base_and_says_so_once(
    server: FakeServer, store: StateStore
) -> None:
    assert _engine(server, store).run([goal("g1"), goal("g2")]).ok
    with store.transaction() as db:
        db.execute("UPDATE resources SET base=NULL")  # as an older version left it
    server.edit("Goal", "g1", lifecycleStatus="on-hold")

    result = _engine(server, store).run(
        [goal("g1", text="Walk daily"), goal("g2", text="Call my sister")]
    )

    assert result.ok
    assert result.notes == [
        "2 record(s) had no stored merge base (state from an earlier version): the server's "
        "current content was taken as their base"
    ]
    # without a base every difference counts as ours, as before
    assert server.find("Goal", "g1")["lifecycleStatus"] == "active"
    assert store.base("goal", "g1") is not None
    later = _engine(server, store).run([goal("g1", text="Walk daily, rain or shine")])
    assert later.notes == []


class RacingServer:
    """The fake server, where the EHR writes the Goal between our read and our write once."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.raced = False

    def read(self, resource_type: str, resource_id: str) -> ReadResult:
        return self.server.read(resource_type, resource_id)

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        if not self.raced and any(e["request"]["method"] == "PUT" for e in bundle["entry"]):
            self.raced = True
            self.server.edit("Goal", "g1", lifecycleStatus="on-hold")
        return self.server.transaction(bundle)

    def search(self, resource_type: str, params: Any) -> Any:
        return self.server.search(resource_type, params)


def test_a_goal_we_unlink_from_our_careplan_goes_and_an_ehr_link_stays(
    server: FakeServer, store: StateStore
) -> None:
    first = [goal("g1"), goal("g2"), careplan("p", ["g1", "g2"])]
    assert _engine(server, store).run(first).ok  # created in one bundle: urn references
    links = server.find("CarePlan", "p")["goal"]
    server.edit("CarePlan", "p", goal=[*links, EHR_LINK])

    result = _engine(server, store).run([goal("g1"), goal("g2"), careplan("p", ["g1"])])

    assert result.ok, result.failures
    assert server.find("CarePlan", "p")["goal"] == [links[0], EHR_LINK]
