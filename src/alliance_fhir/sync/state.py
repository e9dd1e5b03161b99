"""The local state store: what we wrote, where it lives on the server, and how each run went.

SQLite in WAL mode so a reader (``status``, the metrics endpoint) never blocks the writer.
One row per record we own, keyed by (kind, key): the server's id and version, and the hash of
the content we last wrote. A record whose hash is unchanged costs no request on the next run.

Records others may edit (Goals, CarePlans) also keep their *base*: the fields we own as we
last wrote them (JSON), the common ancestor of the three-way merge (``sync.merge3``). That is
patient data at rest, as little as the merge needs; the file is 0600 in a 0700 folder.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alliance_fhir.exceptions import StateError, outcome_summary, redact_outcome
from alliance_fhir.private_files import FILE_MODE, private_dir
from alliance_fhir.sync.source_state import SOURCE_SCHEMA, SourceFingerprints

#: 2: ``resources`` gained ``base`` and ``conflict_fields`` (older stores upgrade on open;
#: their records have no base until the next write, see ``sync.merge3``).
#: 3: ``source_files``, the source fingerprints (``sync.source_state``; created on open).
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    server_id TEXT,
    version_id TEXT,
    content_hash TEXT,
    status TEXT NOT NULL,
    last_sync REAL NOT NULL,
    run_id TEXT,
    base TEXT,
    conflict_fields TEXT,
    conflict_values TEXT,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    outcome TEXT,
    counts TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    resource_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    http_status INTEGER,
    outcome TEXT,
    at REAL NOT NULL,
    resolved INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_open ON dead_letters (resolved, kind, key);
CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Columns added to ``runs`` after schema 1 (added on open, so old stores keep working):
#: which process runs it, so a run whose process died can be told from one in progress.
_RUN_OWNER_COLUMNS = {"pid": "INTEGER", "host": "TEXT"}

#: Columns added to ``resources`` by schema 2 (see ``SCHEMA_VERSION``).
_BASE_COLUMNS = {"base": "TEXT", "conflict_fields": "TEXT"}

#: Added to ``resources`` after schema 2 (on open, as the run owner columns): a record in
#: conflict keeps both sides' values of the conflicting fields for ``status --show-values``;
#: patient data at rest like the base, dropped when the record leaves ``conflict``.
_VALUE_COLUMNS = {"conflict_values": "TEXT"}

#: Outcome of a run whose process ended without finishing it (killed, crashed, power cut).
INTERRUPTED = "interrupted"

#: Outcome of a run whose input files had problems (records left out; counts["problems"]).
FAILED_INPUT = "failed input"

#: Record statuses: ``synced`` (server matches our hash), ``conflict`` (someone else changed
#: it; we did not overwrite), ``rejected`` (the server refused it; see dead_letters).
STATUSES = ("synced", "conflict", "rejected")


@dataclass(frozen=True)
class RecordState:
    kind: str
    key: str
    resource_type: str
    server_id: str | None
    version_id: str | None
    content_hash: str | None
    status: str
    last_sync: float
    #: For a record in conflict: the fields both we and the EHR changed (names, no values).
    conflict_fields: tuple[str, ...] = ()


def _record_state(row: tuple[Any, ...]) -> RecordState:
    names = tuple(json.loads(row[8])) if len(row) > 8 and row[8] else ()
    kind, key, rtype, server_id, version_id, chash, status, last_sync = row[:8]
    return RecordState(kind, key, rtype, server_id, version_id, chash, status, last_sync, names)


@dataclass(frozen=True)
class DeadLetter:
    id: int
    run_id: str
    kind: str
    key: str
    resource_type: str
    reason: str
    http_status: int | None
    outcome: dict[str, Any] | None
    at: float


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    command: str
    started: float
    finished: float | None
    outcome: str | None
    counts: dict[str, int]


class StateStore(SourceFingerprints):
    """Thread-safe access to one SQLite state file (one connection, one lock)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            _create_private(self.path)
        try:
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._db.executescript(SOURCE_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            have = {row[1] for row in self._db.execute("PRAGMA table_info(runs)")}
            for name, sql_type in _RUN_OWNER_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")
            have = {row[1] for row in self._db.execute("PRAGMA table_info(resources)")}
            for name, sql_type in (_BASE_COLUMNS | _VALUE_COLUMNS).items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE resources ADD COLUMN {name} {sql_type}")
            self._db.execute(
                "UPDATE meta SET value=? WHERE key='schema_version' AND CAST(value AS INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state store {self.path} is unusable: {exc}") from exc
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside lands or nothing does."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # Records

    def get(self, kind: str, key: str) -> RecordState | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, key, resource_type, server_id, version_id, content_hash, status,"
                " last_sync, conflict_fields FROM resources WHERE kind=? AND key=?",
                (kind, key),
            ).fetchone()
        return _record_state(row) if row else None

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
        """Every record (of one kind), keyed by (kind, key): one query for a whole plan."""
        sql = (
            "SELECT kind, key, resource_type, server_id, version_id, content_hash, status,"
            " last_sync, conflict_fields FROM resources"
        )
        args: tuple[str, ...] = ()
        if kind is not None:
            sql += " WHERE kind=?"
            args = (kind,)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return {(r[0], r[1]): _record_state(r) for r in rows}

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
        db: sqlite3.Connection | None = None,
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
            " server_id=COALESCE(excluded.server_id, server_id),"
            " version_id=COALESCE(excluded.version_id, version_id),"
            " content_hash=excluded.content_hash, status=excluded.status,"
            " last_sync=excluded.last_sync, run_id=excluded.run_id,"
            " base=COALESCE(excluded.base, base), conflict_fields=excluded.conflict_fields,"
            " conflict_values=CASE WHEN excluded.status='conflict' THEN conflict_values END"
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
        return _record_state(row) if row else None

    def forget_all(self) -> int:
        """Drop every record (the server lost our data); runs and dead letters stay."""
        with self._lock:
            return self._db.execute("DELETE FROM resources").rowcount

    def counts_by_status(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT status, COUNT(*) FROM resources GROUP BY status"
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def set_conflict_values(
        self, kind: str, key: str, values: Mapping[str, Any], db: sqlite3.Connection | None = None
    ) -> None:
        """Keep the values of a record's conflicting fields (``{field: {"ours", "ehr",
        "base"}}``) until it leaves ``conflict``; only ``status --show-values`` reads them."""
        sql = "UPDATE resources SET conflict_values=? WHERE kind=? AND key=?"
        args = (json.dumps(dict(values), sort_keys=True, ensure_ascii=False), kind, key)
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
        return [_record_state(r) for r in rows]

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
        db: sqlite3.Connection | None = None,
    ) -> None:
        """Quarantine a rejected record; an older open letter for the same record is
        superseded. The server's OperationOutcome is kept without its free text (it may echo
        the request: MRN, name, birth date): severity, code and expression/location only."""
        conn = db if db is not None else self._db
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

    def resolve_dead_letters(
        self, kind: str, key: str, db: sqlite3.Connection | None = None
    ) -> None:
        conn = db if db is not None else self._db
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
        dead = [run_id for run_id, owner in self._unfinished() if not _still_running(*owner)]
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
                if r[4] is None and r[0] in unfinished and not _still_running(*unfinished[r[0]])
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
                "INSERT INTO watermarks VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
                " SET value=excluded.value",
                (name, value),
            )


class StoreView(Mapping[tuple[str, str], RecordState]):
    """The state store as a read-only mapping, one indexed lookup per record (no full load)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def __getitem__(self, key: tuple[str, str]) -> RecordState:
        found = self._store.get(*key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._store.all_records())

    def __len__(self) -> int:
        return len(self._store.all_records())


def redact_reason(reason: str, outcome: Mapping[str, Any] | None) -> str:
    """``reason`` with the OperationOutcome's text (as ``str(FhirError)`` embeds it) replaced
    by its codes: a server may echo the request back in ``diagnostics``."""
    clear = outcome_summary(outcome)
    if not clear:
        return reason
    safe = outcome_summary(outcome, redact_text=True)
    return reason.replace(clear, safe)


def _still_running(pid: int | None, host: str | None, started: float) -> bool:
    """Whether the process that started a run may still be running it. Runs without an
    owner (older stores) or of another host are given the benefit of the doubt."""
    if pid is None or host is None or host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    born = _process_start(pid)
    return born is None or born <= started + 1.0  # a newer process reusing the pid is not it


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _create_private(path: Path) -> None:
    """Create the state file 0600 in a 0700 folder before SQLite opens it: SQLite gives its
    -wal and -shm files the database file's mode."""
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return
    except OSError as exc:
        raise StateError(f"state store {path} cannot be created: {exc.strerror}") from exc
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
