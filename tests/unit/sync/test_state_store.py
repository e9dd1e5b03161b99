"""The state store's contract, the same on SQLite and on PostgreSQL: transactions, records,
conflict values, dead letters, runs, watermarks, and the order things come back in."""

from __future__ import annotations

import time

import pytest

from alliance_fhir.sync.state import FAILED_INPUT, StateStore


def _put(store: StateStore, key: str, status: str = "synced", **kw: object) -> None:
    args: dict[str, object] = {
        "kind": "assessment",
        "key": key,
        "resource_type": "QuestionnaireResponse",
        "server_id": f"id-{key}",
        "version_id": "1",
        "content_hash": f"h-{key}",
        "status": status,
        "run_id": "r1",
    }
    store.record(**(args | kw))  # type: ignore[arg-type]  # the keywords record() takes


def _half_written(store: StateStore) -> None:
    with store.transaction() as db:
        _put(store, "a", db=db)
        store.resolve_dead_letters("assessment", "a", db=db)
        raise RuntimeError("the server's answer could not be read")


def test_a_transaction_lands_whole_or_not_at_all(state_store: StateStore) -> None:
    with pytest.raises(RuntimeError):
        _half_written(state_store)
    assert state_store.all_records() == {}

    with state_store.transaction() as db:
        _put(state_store, "a", db=db)
        _put(state_store, "b", db=db)
    assert sorted(key for _, key in state_store.all_records()) == ["a", "b"]


def test_a_record_keeps_its_server_id_and_version_when_an_answer_lacks_them(
    state_store: StateStore,
) -> None:
    _put(state_store, "a", version_id="3")
    _put(state_store, "a", server_id=None, version_id=None, content_hash="h2")
    found = state_store.get("assessment", "a")
    assert found is not None
    assert (found.server_id, found.version_id, found.content_hash) == ("id-a", "3", "h2")
    assert state_store.get("assessment", "nope") is None


def test_records_by_kind_status_and_recency(state_store: StateStore) -> None:
    _put(state_store, "a")
    _put(state_store, "b", status="rejected", server_id=None)
    _put(state_store, "g", kind="goal", resource_type="Goal")
    before = time.time()
    _put(state_store, "c")

    assert set(state_store.all_records("goal")) == {("goal", "g")}
    assert len(state_store.all_records()) == 4
    assert state_store.counts_by_status() == {"synced": 3, "rejected": 1}
    latest = state_store.latest_synced()
    assert latest is not None
    assert latest.key == "c"
    # times keep sub-second precision (a 4-byte float would round epoch seconds to minutes)
    assert abs(latest.last_sync - before) < 5
    found = state_store.states_of([("assessment", "a"), ("assessment", "zz")])
    assert found[("assessment", "a")].server_id == "id-a"
    assert list(found) == [("assessment", "a")]
    assert state_store.forget_all() == 4
    assert state_store.all_records() == {}


def test_conflicts_come_back_in_byte_order_with_values_until_resolved(
    state_store: StateStore,
) -> None:
    for key in ("b", "B", "a", "Z"):
        _put(state_store, key, status="conflict", conflict_fields=["target"])
    state_store.set_conflict_values("assessment", "a", {"target": {"ours": 1, "ehr": 2}})

    assert [c.key for c in state_store.conflicts()] == ["B", "Z", "a", "b"]
    assert state_store.conflict_values("assessment", "a") == {"target": {"ours": 1, "ehr": 2}}
    _put(state_store, "a", status="conflict")  # still in conflict: the values stay
    assert state_store.conflict_values("assessment", "a") == {"target": {"ours": 1, "ehr": 2}}
    _put(state_store, "a")  # resolved: the values go
    assert state_store.conflict_values("assessment", "a") == {}


def test_a_new_dead_letter_supersedes_the_open_one_and_a_write_resolves_it(
    state_store: StateStore,
) -> None:
    for run_id in ("r1", "r2"):
        state_store.dead_letter(
            run_id=run_id,
            kind="assessment",
            key="a",
            resource_type="Observation",
            reason="refused",
            http_status=422,
            outcome=None,
        )
    [letter] = state_store.open_dead_letters()
    assert (letter.run_id, letter.http_status, letter.outcome) == ("r2", 422, None)
    with state_store.transaction() as db:
        state_store.resolve_dead_letters("assessment", "a", db=db)
    assert state_store.open_dead_letters() == []


def test_runs_newest_first_with_outcomes_and_counts(state_store: StateStore) -> None:
    state_store.start_run("r1", "sync")
    state_store.finish_run("r1", "ok", {"created": 2})
    time.sleep(0.01)
    state_store.start_run("r2", "push")
    state_store.finish_run("r2", "ok", {"unchanged": 5})
    state_store.mark_failed_input("r2", problems=3)
    time.sleep(0.01)
    state_store.start_run("r3", "monitor")

    runs = state_store.recent_runs()
    assert [(r.run_id, r.command, r.outcome) for r in runs] == [
        ("r3", "monitor", None),
        ("r2", "push", FAILED_INPUT),
        ("r1", "sync", "ok"),
    ]
    assert runs[1].counts == {"problems": 3, "unchanged": 5}
    assert runs[2].finished is not None
    assert runs[2].finished >= runs[2].started
    assert [r.run_id for r in state_store.recent_runs(1)] == ["r3"]


def test_watermarks_are_set_and_moved(state_store: StateStore) -> None:
    assert state_store.watermark("monitor") is None
    state_store.set_watermark("monitor", "2026-01-01T00:00:00Z")
    state_store.set_watermark("monitor", "2026-02-01T00:00:00Z")
    assert state_store.watermark("monitor") == "2026-02-01T00:00:00Z"
