"""A state store under test, on SQLite or PostgreSQL (plain helpers; the fixtures
``state_target`` and ``state_store`` in this folder's ``conftest.py`` build them)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alliance_fhir.app.records import Records
from alliance_fhir.sync.state import StateStore, open_store
from alliance_fhir.sync.state.backend import Backend
from alliance_fhir.sync.state.postgres import PostgresBackend
from alliance_fhir.sync.state.sqlite import SqliteBackend
from pgkit import Cluster


@dataclass(frozen=True)
class Target:
    """Where one test's store lives: a fresh SQLite file, or a fresh PostgreSQL schema."""

    dialect: str
    url: str
    password: str | None = None
    path: Path | None = None
    cluster: Cluster | None = None
    schema: str | None = None

    def open(self) -> StateStore:
        return open_store(self.url, password=self.password)

    def backend(self) -> Backend:
        """A bare connection to the store's database, no migrations run."""
        if self.path is not None:
            return SqliteBackend(self.path)
        return PostgresBackend(self.url, password=self.password)

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` read beside the store, as an operator's client would."""
        if self.path is not None:
            with sqlite3.connect(self.path) as db:
                return db.execute(sql).fetchall()
        assert self.cluster is not None
        with self.cluster.connect(self.schema) as db:
            return db.execute(sql.encode()).fetchall()

    def env(self) -> dict[str, str]:
        """The environment of a child process that opens this store."""
        env = dict(os.environ)
        if self.password is not None:
            env["ALLIANCE_FHIR_STATE_PASSWORD"] = self.password
        return env


def record_all_synced(store: StateStore, records: Records) -> None:
    """Record every record of ``records`` as the server took it (synced, made-up ids)."""
    for n, d in enumerate(records.desired):
        store.record(
            kind=d.kind,
            key=d.key,
            resource_type=d.resource["resourceType"],
            server_id=str(n),
            version_id="1",
            content_hash=d.hash,
            status="synced",
            run_id="r",
        )
