"""The state store: what we wrote, where it lives on the server, and how each run went.

One row per record we own, keyed by (kind, key): the server's id and version, and the hash of
the content we last wrote. A record whose hash is unchanged costs no request on the next run.

Records others may edit (Goals, CarePlans) also keep their *base*: the fields we own as we
last wrote them (JSON), the common ancestor of the three-way merge (``sync.merge3``). That is
patient data at rest, as little as the merge needs.

The SQL is written once (``?`` placeholders, SQL both dialects accept) over a ``Backend``:
SQLite (a 0600 file, the default) or PostgreSQL (``state_url = "postgresql://..."``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alliance_fhir.exceptions import StateError, redact_outcome
from alliance_fhir.sync.state.backend import Backend
from alliance_fhir.sync.state.lookups import RecordStates
from alliance_fhir.sync.state.migrations import migrate
from alliance_fhir.sync.state.owners import still_running
from alliance_fhir.sync.state.records import (
    FAILED_INPUT,
    INTERRUPTED,
    STATUSES,
    DeadLetter,
    RecordState,
    RunRecord,
    record_state,
    redact_reason,
)
from alliance_fhir.sync.state.sources import SourceFingerprints, bump_generation
from alliance_fhir.sync.state.sqlite import SqliteBackend

#: The records' rows as ``record_state`` reads them.
_SELECT_STATES = (
    "SELECT kind, key, resource_type, server_id, version_id, content_hash, status,"
    " last_sync, conflict_fields FROM resources"
)
_SELECT_STATE = _SELECT_STATES + " WHERE kind=? AND key=?"
_KEYS_PER_QUERY = 500  # under every backend's limit of bound parameters


class StateStore(SourceFingerprints):
    """Thread-safe access to one state store (one connection, one lock).

    ``StateStore(path)`` opens (or creates) a SQLite file; ``open_store(url)`` picks the
    backend from a ``state_url``. Opening runs the schema migrations the store lacks."""

    def __init__(self, path: Path | str | None = None, *, backend: Backend | None = None) -> None:
        if backend is None:
            if path is None:
                raise TypeError("StateStore needs a path or a backend")
            backend = SqliteBackend(path)
        self.path = Path(path) if path is not None else None
        self._db: Backend = backend
        try:
            migrate(backend)
        except StateError:
            backend.close()
            raise
        except Exception as exc:  # the driver's own error (SQLite): the store is unusable
            backend.close()
            raise StateError(f"state store {backend.where} is unusable: {exc}") from exc
        self._lock = threading.RLock()
        #: A record or dead letter was written in the open transaction: it bumps the state
        #: generation before it commits (``sync.state.sources``).
        self._written = False

    @property
    def where(self) -> str:
        """The store's file, or its URL without a password: for messages."""
        return self._db.where

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Backend]:
        """One atomic write: everything inside lands or nothing does. Pass what it yields as
        ``db=`` to the writing methods (or ``execute`` on it)."""
        with self._lock, self._db.transaction():
            try:
                yield self._db
                if self._written:
                    bump_generation(self._db)
            finally:
                self._written = False

    def _wrote(self, db: Backend | None) -> None:
        """A write of records or dead letters is about to run: inside a transaction (``db``
        given) the generation moves on when it commits; alone, right now (before the write:
        a crash in between costs only one more comparison)."""
        if db is not None:
            self._written = True
        else:
            with self._lock:
                bump_generation(self._db)

    # Records

    def get(self, kind: str, key: str) -> RecordState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, key, resource_type, server_id, version_id, content_hash, status,"
                " last_sync, conflict_fields FROM resources WHERE kind=? AND key=?",
                (kind, key),
            ).fetchone()
        return record_state(row) if row else None

    def base(self, kind: str, key: str) -> dict[str, Any] | None:
        """The fields we own as we last wrote them, or None (never written, or written by a
        version before schema 2)."""
        with self._lock:
            row = self._db.execute(
                "SELECT base FROM resources WHERE kind=? AND key=?", (kind, key)
            ).fetchone()
        if not row or not row[0]:
            return None
        found = json.loads(row[0])
        return found if isinstance(found, dict) else None

    def all_records(self, kind: str | None = None) -> dict[tuple[str, str], RecordState]:
        """Every record (of one kind), keyed by (kind, key): a snapshot, still there once the
        store is closed."""
        states = self.record_states(kind)
        return {item: states[item] for item in states}

    def states_of(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], RecordState]:
        """The states of the given records that the store holds: one query per kind and
        ``_KEYS_PER_QUERY`` keys (a sync window of 200 asked one by one was 200 queries)."""
        by_kind: dict[str, list[str]] = {}
        for kind, key in keys:
            by_kind.setdefault(kind, []).append(key)
        found: dict[tuple[str, str], RecordState] = {}
        for kind, wanted in by_kind.items():
            unique = list(dict.fromkeys(wanted))
            for start in range(0, len(unique), _KEYS_PER_QUERY):
                part = unique[start : start + _KEYS_PER_QUERY]
                sql = f"{_SELECT_STATES} WHERE kind=? AND key IN ({','.join('?' * len(part))})"
                with self._lock:
                    rows = self._db.execute(sql, (kind, *part)).fetchall()
                for row in rows:
                    found[(row[0], row[1])] = record_state(row)
        return found

    def record_states(self, kind: str | None = None) -> RecordStates:
        """Every record (of one kind), keyed by (kind, key), for a plan made while the store
        is open: read as looked up, a few one by one, else all in one query
        (``sync.state.lookups``)."""
        sql = _SELECT_STATES
        args: tuple[str, ...] = ()
        if kind is not None:
            sql += " WHERE kind=?"
            args = (kind,)

        def load() -> list[tuple[Any, ...]]:
            with self._lock:
                rows: list[tuple[Any, ...]] = self._db.execute(sql, args).fetchall()
            return rows

        def one(of: str, key: str) -> tuple[Any, ...] | None:
            if kind is not None and of != kind:
                return None
            with self._lock:
                row: tuple[Any, ...] | None = self._db.execute(_SELECT_STATE, (of, key)).fetchone()
            return row

        return RecordStates(load, one)

    def record(
        self,
        *,
        kind: str,
        key: str,
        resource_type: str,
        server_id: str | None,
        version_id: str | None,
        content_hash: str | None,
        status: str,
        run_id: str | None,
        db: Backend | None = None,
        base: Mapping[str, Any] | None = None,
        conflict_fields: Sequence[str] = (),
    ) -> None:
        """Insert or update one record. ``base`` None keeps the stored base (a refused or
        conflicting write changes nothing on the server); ``conflict_fields`` replace the
        stored ones."""
        if status not in STATUSES:
            raise ValueError(f"unknown record status {status!r}")
        sql = (
            "INSERT INTO resources (kind, key, resource_type, server_id, version_id,"
            " content_hash, status, last_sync, run_id, base, conflict_fields)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(kind, key) DO UPDATE"
            " SET resource_type=excluded.resource_type,"
            " server_id=COALESCE(excluded.server_id, resources.server_id),"
            " version_id=COALESCE(excluded.version_id, resources.version_id),"
            " content_hash=excluded.content_hash, status=excluded.status,"
            " last_sync=excluded.last_sync, run_id=excluded.run_id,"
            " base=COALESCE(excluded.base, resources.base),"
            " conflict_fields=excluded.conflict_fields,"
            " conflict_values=CASE WHEN excluded.status='conflict'"
            " THEN resources.conflict_values END"
        )
        args = (
            kind,
            key,
            resource_type,
            server_id,
            version_id,
            content_hash,
            status,
            time.time(),
            run_id,
            None if base is None else json.dumps(base, sort_keys=True, ensure_ascii=False),
            json.dumps(list(conflict_fields)) if conflict_fields else None,
        )
        self._wrote(db)
        if db is not None:
            db.execute(sql, args)
        else:
            with self._lock:
                self._db.execute(sql, args)

    def latest_synced(self) -> RecordState | None:
        """The record most recently confirmed on the server (a cheap liveness sample)."""
        with self._lock:
            row = self._db.execute(
                "SELECT kind, key, resource_type, server_id, version_id, content_hash, status,"
                " last_sync, conflict_fields FROM resources WHERE status='synced'"
                " AND server_id IS NOT NULL ORDER BY last_sync DESC LIMIT 1"
            ).fetchone()
        return record_state(row) if row else None

    def holds_records(self) -> bool:
        """Whether any record was ever kept here (a first sync's state holds none)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM resources LIMIT 1").fetchone() is not None

    def forget_all(self) -> int:
        """Drop every record (the server lost our data); runs and dead letters stay."""
        self._wrote(None)
        with self._lock:
            return self._db.execute("DELETE FROM resources").rowcount

    def counts_by_status(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM resources GROUP BY status"
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def set_conflict_values(
        self, kind: str, key: str, values: Mapping[str, Any], db: Backend | None = None
    ) -> None:
        """Keep the values of a record's conflicting fields (``{field: {"ours", "ehr",
        "base"}}``) until it leaves ``conflict``; only ``status --show-values`` reads them."""
        sql = "UPDATE resources SET conflict_values=? WHERE kind=? AND key=?"
        args = (json.dumps(dict(values), sort_keys=True, ensure_ascii=False), kind, key)
        self._wrote(db)
        if db is not None:
            db.execute(sql, args)
        else:
            with self._lock:
                self._db.execute(sql, args)

    def conflict_values(self, kind: str, key: str) -> dict[str, Any]:
        """What :meth:`set_conflict_values` kept for a record in conflict ({} when nothing)."""
        with self._lock:
            row = self._db.execute(
                "SELECT conflict_values FROM resources WHERE kind=? AND key=?"
                " AND status='conflict'",
                (kind, key),
            ).fetchone()
        found = json.loads(row[0]) if row and row[0] else {}
        return found if isinstance(found, dict) else {}

    def conflicts(self) -> list[RecordState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, key, resource_type, server_id, version_id, content_hash, status,"
                " last_sync, conflict_fields FROM resources WHERE status='conflict'"
                " ORDER BY kind, key"
            ).fetchall()
        return [record_state(r) for r in rows]

    # Dead letters

    def dead_letter(
        self,
        *,
        run_id: str,
        kind: str,
        key: str,
        resource_type: str,
        reason: str,
        http_status: int | None,
        outcome: Mapping[str, Any] | None,
        db: Backend | None = None,
    ) -> None:
        """Quarantine a rejected record; an older open letter for the same record is
        superseded. The server's OperationOutcome is kept without its free text (it may echo
        the request: MRN, name, birth date): severity, code and expression/location only."""
        conn = db if db is not None else self._db
        self._wrote(db)
        reason = redact_reason(reason, outcome)
        outcome = redact_outcome(outcome)
        with self._lock:
            conn.execute(
                "UPDATE dead_letters SET resolved=1 WHERE kind=? AND key=? AND resolved=0",
                (kind, key),
            )
            conn.execute(
                "INSERT INTO dead_letters (run_id, kind, key, resource_type, reason, http_status,"
                " outcome, at) VALUES (?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    kind,
                    key,
                    resource_type,
                    reason,
                    http_status,
                    json.dumps(outcome, sort_keys=True) if outcome else None,
                    time.time(),
                ),
            )

    def resolve_dead_letters(self, kind: str, key: str, db: Backend | None = None) -> None:
        conn = db if db is not None else self._db
        self._wrote(db)
        with self._lock:
            conn.execute(
                "UPDATE dead_letters SET resolved=1 WHERE kind=? AND key=? AND resolved=0",
                (kind, key),
            )

    def open_dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, run_id, kind, key, resource_type, reason, http_status, outcome, at"
                " FROM dead_letters WHERE resolved=0 ORDER BY id"
            ).fetchall()
        return [
            DeadLetter(
                id=r[0],
                run_id=r[1],
                kind=r[2],
                key=r[3],
                resource_type=r[4],
                reason=r[5],
                http_status=r[6],
                outcome=json.loads(r[7]) if r[7] else None,
                at=r[8],
            )
            for r in rows
        ]

    # Runs

    def start_run(self, run_id: str, command: str) -> None:
        """Record a run as ours (pid, host); runs left ``running`` by a process that is gone
        are marked interrupted first."""
        self.mark_interrupted()
        with self._lock:
            self._db.execute(
                "INSERT INTO runs (run_id, command, started, pid, host) VALUES (?,?,?,?,?)",
                (run_id, command, time.time(), os.getpid(), socket.gethostname()),
            )

    def mark_interrupted(self) -> list[str]:
        """Close every unfinished run whose process on this host no longer exists (killed
        mid-way) as ``interrupted``; returns their ids. Runs of other hosts are left alone:
        we cannot see their processes."""
        dead = [run_id for run_id, owner in self._unfinished() if not still_running(*owner)]
        if dead:
            with self._lock:
                self._db.executemany(
                    "UPDATE runs SET outcome=? WHERE run_id=? AND outcome IS NULL",
                    [(INTERRUPTED, run_id) for run_id in dead],
                )
        return dead

    def _unfinished(self) -> list[tuple[str, tuple[int | None, str | None, float]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, pid, host, started FROM runs WHERE outcome IS NULL"
            ).fetchall()
        return [(r[0], (r[1], r[2], r[3])) for r in rows]

    def finish_run(self, run_id: str, outcome: str, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE runs SET finished=?, outcome=?, counts=? WHERE run_id=?",
                (time.time(), outcome, json.dumps(dict(counts), sort_keys=True), run_id),
            )

    def mark_failed_input(self, run_id: str, problems: int) -> None:
        """A finished run whose input had ``problems`` (records left out) is ``failed input``
        with their count, not ``ok`` with empty counts; a run that failed on the server keeps
        ``failed``."""
        with self._lock:
            row = self._db.execute(
                "SELECT outcome, counts FROM runs WHERE run_id=?", (run_id,)
            ).fetchone()
            if row is None or row[0] == "failed":
                return
            counts = {**json.loads(row[1] or "{}"), "problems": problems}
            self._db.execute(
                "UPDATE runs SET outcome=?, counts=? WHERE run_id=?",
                (FAILED_INPUT, json.dumps(counts, sort_keys=True), run_id),
            )

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT run_id, command, started, finished, outcome, counts FROM runs"
                " ORDER BY started DESC LIMIT ?",
                (limit,),
            ).fetchall()
        unfinished = dict(self._unfinished())
        return [
            RunRecord(
                r[0],
                r[1],
                r[2],
                r[3],
                INTERRUPTED
                if r[4] is None and r[0] in unfinished and not still_running(*unfinished[r[0]])
                else r[4],
                json.loads(r[5]),
            )
            for r in rows
        ]

    # Watermarks (incremental pulls)

    def watermark(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM watermarks WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else None

    def set_watermark(self, name: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO watermarks (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
                " SET value=excluded.value",
                (name, value),
            )
