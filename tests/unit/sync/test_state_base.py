"""State schema 2: the merge base per record, and stores of schema 1 upgraded in place."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

from alliance_fhir.sync.state import SCHEMA_VERSION, StateStore

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
    assert version == str(SCHEMA_VERSION) == "3"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_conflict_keeps_the_base_of_the_last_write(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
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
