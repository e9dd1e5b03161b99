"""The whole-state read views (``sync.state.lookups``) and where a file's "all synced" mark
lives (migration 8), on SQLite and on PostgreSQL.

What a user would notice if these were wrong: a plan that calls a changed record unchanged
(a state looked up wrongly), or a file skipped as all synced when its records changed (a
mark that outlived the fingerprint it was made for).
"""

from __future__ import annotations

from pathlib import Path

from statekit import Target

from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.state.lookups import RecordStates
from alliance_fhir.sync.state.migrations import migrate
from alliance_fhir.sync.state.sources import SourceFingerprint


def _record(
    store: StateStore,
    kind: str,
    key: str,
    status: str = "synced",
    conflict_fields: tuple[str, ...] = (),
) -> None:
    store.record(
        kind=kind,
        key=key,
        resource_type="QuestionnaireResponse" if kind == "assessment" else "Goal",
        server_id=f"id-{key}",
        version_id="1",
        content_hash=f"h-{key}",
        status=status,
        run_id="r",
        conflict_fields=conflict_fields,
    )


def _synced_assessments(store: StateStore, keys: list[str]) -> None:
    """Synced assessment records under ``keys``, written in one transaction."""
    with store.transaction() as db:
        for key in keys:
            store.record(
                kind="assessment",
                key=key,
                resource_type="QuestionnaireResponse",
                server_id=f"id-{key}",
                version_id="1",
                content_hash=f"h-{key}",
                status="synced",
                run_id="r",
                db=db,
            )


def _fingerprint(records: tuple[tuple[str, str, str, int | None], ...]) -> SourceFingerprint:
    return SourceFingerprint("k1", 10, 123, 7, "ab" * 32, "cd" * 32, records)


def test_record_states_are_the_same_looked_up_one_by_one_or_all_at_once(
    state_store: StateStore,
) -> None:
    """A dry-run plan of a few records reads them one by one; past ``ONE_BY_ONE`` look-ups
    every row is read at once. Either way each state is the stored one."""
    store = state_store
    keys = [f"a{n:04d}" for n in range(RecordStates.ONE_BY_ONE + 20)]
    _synced_assessments(store, keys)
    _record(store, "goal", "g1", status="conflict", conflict_fields=("lifecycleStatus",))

    states = store.record_states()
    for key in keys:  # one by one, then (past ONE_BY_ONE) from every row read at once
        assert states.get(("assessment", key)) == store.get("assessment", key)
    assert states[("goal", "g1")].conflict_fields == ("lifecycleStatus",)
    assert states.get(("assessment", "missing")) is None
    assert ("assessment", "missing") not in states
    assert len(states) == len(keys) + 1
    assert dict(states) == {k: store.get(*k) for k in states}

    few = store.record_states()
    assert few.get(("goal", "g1")) == store.get("goal", "g1")  # one query
    assert ("goal", "g1") in few
    assert "g1" not in few
    goals = store.record_states("goal")
    assert goals.get(("assessment", keys[0])) is None  # another kind, one by one too
    assert list(goals) == [("goal", "g1")]
    assert store.all_records() == dict(states)  # a snapshot of the same


def test_states_of_a_window_are_the_stored_ones_in_few_queries(state_store: StateStore) -> None:
    """A sync window's plan reads its records' states at once (more keys than one query
    takes, two kinds, a key asked twice, keys the store lacks): the same states as one by
    one, and nothing for a record never written."""
    store = state_store
    keys = [f"w{n:04d}" for n in range(1100)]
    _synced_assessments(store, keys)
    _record(store, "goal", "w0001", status="conflict", conflict_fields=("lifecycleStatus",))
    asked = [("assessment", k) for k in keys] + [
        ("goal", "w0001"),
        ("goal", "w0002"),  # another kind's key: not held
        ("assessment", "new"),
        ("assessment", keys[0]),
    ]
    found = store.states_of(asked)
    assert found == {k: store.get(*k) for k in asked if store.get(*k) is not None}
    assert len(found) == len(keys) + 1
    assert found[("goal", "w0001")].conflict_fields == ("lifecycleStatus",)
    assert store.states_of([]) == {}


def test_all_records_is_a_snapshot_that_outlives_the_store(tmp_path: Path) -> None:
    """What a caller keeps after closing the store (the fault harness's checks do)."""
    with StateStore(tmp_path / "state.sqlite3") as store:
        _record(store, "assessment", "a1")
        rows = store.all_records()
    assert rows[("assessment", "a1")].content_hash == "h-a1"
    assert list(rows) == [("assessment", "a1")]


def test_synced_hashes_answer_per_record_and_per_file(state_store: StateStore) -> None:
    store = state_store
    _record(store, "assessment", "a1")
    _record(store, "score", "a1")
    _record(store, "assessment", "a2", status="conflict")
    synced = store.synced_hashes()
    assert synced == {("assessment", "a1"): "h-a1", ("score", "a1"): "h-a1"}
    assert synced.hash_of("score", "a1") == "h-a1"
    assert synced.hash_of("assessment", "a2") is None  # in conflict
    assert synced.hash_of("goal", "a1") is None  # a kind the store does not hold
    assert synced.holds([["assessment", "a1", "h-a1", 3], ["score", "a1", "h-a1", None]])
    assert not synced.holds([["assessment", "a1", "h-a1", 3], ["score", "a1", "other", None]])
    assert not synced.holds([["assessment", "a2", "h-a2", 3]])
    assert synced.holds([])


def test_a_files_synced_mark_does_not_outlive_its_fingerprint(state_store: StateStore) -> None:
    """Saving a fingerprint does not move the state generation, so a mark left behind would
    vouch for records it never saw: saving or forgetting a file drops its mark."""
    store = state_store
    store.save_source_fingerprints([_fingerprint((("assessment", "a1", "h1", 4),))])
    generation = store.state_generation()
    assert store.source_fingerprints()["k1"].verified is None
    store.mark_sources_verified([("k1", 1)], generation)
    assert store.source_fingerprints()["k1"].verified == generation
    assert store.source_fingerprints(["k1"])["k1"].verified == generation

    changed = (("assessment", "a1", "h1", 4), ("assessment", "a2", "h2", 9))
    store.save_source_fingerprints([_fingerprint(changed)])
    assert store.state_generation() == generation
    [row] = store.source_fingerprints().values()
    assert (row.verified, tuple(row.records)) == (None, changed)

    store.mark_sources_verified([("k1", 2)], generation)
    store.forget_source_fingerprints(["k1"])
    store.save_source_fingerprints([_fingerprint(changed)])
    assert store.source_fingerprints()["k1"].verified is None


def test_a_store_marked_before_migration_8_compares_once_more(state_target: Target) -> None:
    """Marks in the old column are not carried over: the first run compares again."""
    backend = state_target.backend()
    migrate(backend, target=7)
    backend.execute(
        "INSERT INTO source_files (path_key, size, mtime_ns, inode, sha256, context, records,"
        " notes, seen, record_count, verified) VALUES ('k1', 1, 2, 3, 's', 'c',"
        ' \'[["assessment","a1","h1",4]]\', \'[[],[]]\', 0, NULL, 5)'
    )
    backend.close()
    with state_target.open() as store:
        [row] = store.source_fingerprints().values()
        assert (row.verified, tuple(row.records), len(row.records)) == (
            None,
            (("assessment", "a1", "h1", 4),),
            1,
        )
        store.mark_sources_verified([("k1", 1)], 5)  # also fills the missing count
        assert store.source_fingerprints()["k1"].verified == 5
    assert state_target.rows("SELECT record_count FROM source_files") == [(1,)]
