"""State schema 2: the merge base per record, and older stores upgraded in place (SQLite
schema 1 and 2 files from before the migrations table, any store one migration behind)."""

from __future__ import annotations

import sqlite3
import stat
import threading
from pathlib import Path

import pytest
from statekit import Target

from alliance_fhir.exceptions import StateError
from alliance_fhir.sync.state import MIGRATIONS, SCHEMA_VERSION, StateStore
from alliance_fhir.sync.state.migrations import applied, migrate

#: The ``resources`` table and meta row as schema 1 created them.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE resources (
    kind TEXT NOT NULL, key TEXT NOT NULL, resource_type TEXT NOT NULL, server_id TEXT,
    version_id TEXT, content_hash TEXT, status TEXT NOT NULL, last_sync REAL NOT NULL,
    run_id TEXT, PRIMARY KEY (kind, key)
);
INSERT INTO resources VALUES ('goal', 'p/walks', 'Goal', '12', '4', 'abc', 'synced', 1.0, 'r0');
"""


def _record(store: StateStore, status: str, base: dict[str, str] | None) -> None:
    store.record(
        kind="goal",
        key="p/walks",
        resource_type="Goal",
        server_id="12",
        version_id="5",
        content_hash="def",
        status=status,
        run_id="r1",
        base=base,
    )


def test_a_schema_1_store_upgrades_in_place_and_its_records_have_no_base(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
    path.chmod(0o600)

    with StateStore(path) as store:
        found = store.get("goal", "p/walks")
        assert found is not None
        assert (found.server_id, found.version_id, found.content_hash) == ("12", "4", "abc")
        assert store.base("goal", "p/walks") is None
        _record(store, "synced", {"lifecycleStatus": "active"})
        assert store.base("goal", "p/walks") == {"lifecycleStatus": "active"}

    with sqlite3.connect(path) as db:
        [(version,)] = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchall()
    assert version == str(SCHEMA_VERSION)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_conflict_keeps_the_base_of_the_last_write(state_target: Target) -> None:
    with state_target.open() as store:
        _record(store, "synced", {"lifecycleStatus": "active"})
        store.record(
            kind="goal",
            key="p/walks",
            resource_type="Goal",
            server_id=None,
            version_id=None,
            content_hash="def",
            status="conflict",
            run_id="r2",
            conflict_fields=["lifecycleStatus"],
        )
        assert store.base("goal", "p/walks") == {"lifecycleStatus": "active"}
        [conflict] = store.conflicts()
        assert conflict.conflict_fields == ("lifecycleStatus",)
        _record(store, "synced", None)
        found = store.get("goal", "p/walks")
        assert found is not None
        assert (found.status, found.conflict_fields) == ("synced", ())


#: A store as the release before the migrations table left it: schema 2, every column.
SCHEMA_2 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '2');
CREATE TABLE resources (
    kind TEXT NOT NULL, key TEXT NOT NULL, resource_type TEXT NOT NULL, server_id TEXT,
    version_id TEXT, content_hash TEXT, status TEXT NOT NULL, last_sync REAL NOT NULL,
    run_id TEXT, base TEXT, conflict_fields TEXT, conflict_values TEXT, PRIMARY KEY (kind, key)
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, command TEXT NOT NULL, started REAL NOT NULL, finished REAL,
    outcome TEXT, counts TEXT NOT NULL DEFAULT '{}', pid INTEGER, host TEXT
);
CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, kind TEXT NOT NULL,
    key TEXT NOT NULL, resource_type TEXT NOT NULL, reason TEXT NOT NULL, http_status INTEGER,
    outcome TEXT, at REAL NOT NULL, resolved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX dead_letters_open ON dead_letters (resolved, kind, key);
CREATE TABLE watermarks (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO resources VALUES ('goal', 'p/walks', 'Goal', '12', '4', 'abc', 'conflict', 1.0,
    'r0', '{"lifecycleStatus": "active"}', '["lifecycleStatus"]', '{"lifecycleStatus": {}}');
INSERT INTO runs VALUES ('r0', 'sync', 1.0, 2.0, 'ok', '{"created": 1}', 1, 'h');
INSERT INTO dead_letters (run_id, kind, key, resource_type, reason, at)
    VALUES ('r0', 'assessment', 'a1', 'Observation', 'refused', 3.0);
INSERT INTO watermarks VALUES ('monitor', '2026-01-01T00:00:00Z');
"""


def test_a_schema_2_file_from_before_migrations_upgrades_with_everything_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_2)
    path.chmod(0o600)

    with StateStore(path) as store:
        [conflict] = store.conflicts()
        assert (conflict.key, conflict.version_id, conflict.conflict_fields) == (
            "p/walks",
            "4",
            ("lifecycleStatus",),
        )
        assert store.base("goal", "p/walks") == {"lifecycleStatus": "active"}
        assert store.conflict_values("goal", "p/walks") == {"lifecycleStatus": {}}
        [run] = store.recent_runs()
        assert (run.run_id, run.outcome, run.counts) == ("r0", "ok", {"created": 1})
        assert [d.key for d in store.open_dead_letters()] == ["a1"]
        assert store.watermark("monitor") == "2026-01-01T00:00:00Z"

    with sqlite3.connect(path) as db:
        ledger = db.execute("SELECT version, name FROM schema_migrations ORDER BY 1").fetchall()
        [(version,)] = db.execute("SELECT value FROM meta WHERE key='schema_version'")
    assert ledger == [(m.version, m.name) for m in MIGRATIONS]
    assert version == str(SCHEMA_VERSION)


def test_a_store_one_migration_behind_upgrades_to_current(state_target: Target) -> None:
    backend = state_target.backend()
    migrate(backend, target=SCHEMA_VERSION - 1)
    backend.execute(
        "INSERT INTO resources (kind, key, resource_type, server_id, version_id, content_hash,"
        " status, last_sync, run_id) VALUES ('goal', 'p/walks', 'Goal', '12', '4', 'abc',"
        " 'synced', 1.0, 'r0')"
    )
    assert applied(backend) == list(range(1, SCHEMA_VERSION))
    backend.close()

    with state_target.open() as store:
        found = store.get("goal", "p/walks")
        assert found is not None
        assert (found.server_id, found.version_id, found.content_hash) == ("12", "4", "abc")
        assert store.base("goal", "p/walks") is None
        _record(store, "synced", {"lifecycleStatus": "active"})
        assert store.base("goal", "p/walks") == {"lifecycleStatus": "active"}

    assert state_target.rows("SELECT version FROM schema_migrations ORDER BY version") == [
        (m.version,) for m in MIGRATIONS
    ]
    assert state_target.rows("SELECT value FROM meta WHERE key='schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]


def test_a_store_of_a_newer_release_is_refused_not_misread(state_target: Target) -> None:
    with state_target.open():
        pass
    backend = state_target.backend()
    backend.execute(
        "INSERT INTO schema_migrations (version, name, applied) VALUES (?, 'future', 'now')",
        (SCHEMA_VERSION + 1,),
    )
    backend.close()

    with pytest.raises(StateError, match=f"has schema {SCHEMA_VERSION + 1}, newer than"):
        state_target.open()


def test_processes_opening_a_new_store_at_once_migrate_it_once(state_target: Target) -> None:
    errors: list[BaseException] = []

    def open_once() -> None:
        try:
            state_target.open().close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert state_target.rows("SELECT version FROM schema_migrations ORDER BY version") == [
        (m.version,) for m in MIGRATIONS
    ]
