"""Source fingerprints in the state store (migration 4): which source files are unchanged.

One table, ``source_files``: per source file (keyed by the sha256 of its absolute path, so
a file name that is a person's name is not kept in clear) its stat tuple, the sha256 of its
content, the *context hash* it was read under (``app.fingerprints``) and the records it
mapped to as ``[kind, key, content hash, line]``, and the notes its reading and mapping
printed (records left out on purpose, responses not scored: said again when it is skipped),
and (migration 6) the path key of the folder it was listed under, ``root``, so the rows of
files gone from a folder a run listed are pruned (``SourceIndex.finish``), and (migration 7)
``record_sources``: per assessment key a digest of that record's own source content, so a
changed file's unchanged records are not mapped again (``app.record_reuse``). A file that had
input problems keeps its row with an empty ``sha256`` (never equal to a file's): it is always
read again, yet its good records are reused. ``record_count``: an unchanged file's records
are counted without decoding them. ``source_verified`` (migration 8; it replaces the column
``source_files.verified``, no longer read): per path key the *state generation* at which all
its records were found synced, so they are not compared with the state again while it has
not moved (see below). A small row of its own: marking the column rewrote the whole
``source_files`` row, records and all (~25 MB through the WAL at 100,000 assessments).
Saving or forgetting a fingerprint drops its mark.

**State generation.** ``meta.state_generation`` is a counter that ``StateStore`` bumps in the
same transaction as every write of ``resources`` or ``dead_letters`` (before the write when
there is no transaction). A run reads it *before* it reads the synced hashes, and marks the
files it found all synced as verified at that generation; a later run that reads the same
generation knows no record changed since, so it skips those files without reading 200,000
hashes. Any write, of any process on the store, moves it on: the next run compares again.
The last run's figures (files read and skipped) live in ``meta`` under ``sources_last_run``.

A mixin of ``StateStore`` (it uses that class's backend and lock), so the store's main
module stays about records and runs. The SQL is written once for SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from alliance_fhir.sync.state.backend import Backend
from alliance_fhir.sync.state.lookups import SyncedHashes

__all__ = [
    "SourceFingerprint",
    "SourceFingerprints",
    "StoredDigests",
    "StoredRecords",
    "bump_generation",
]

#: Moves the state generation on; run in the transaction of the write it stands for.
GENERATION_BUMP = (
    "INSERT INTO meta (key, value) VALUES ('state_generation', '1') ON CONFLICT (key)"
    " DO UPDATE SET value=CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)"
)


def bump_generation(db: Backend) -> None:
    """Move the state generation on (see the module docstring)."""
    db.execute(GENERATION_BUMP)


#: Insert or replace, in the SQL both SQLite and PostgreSQL speak.
_UPSERT = (
    "INSERT INTO source_files"
    " (path_key, size, mtime_ns, inode, sha256, context, records, notes, seen, root,"
    " record_sources, record_count, verified) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL)"
    " ON CONFLICT (path_key) DO UPDATE SET"
    " size=excluded.size, mtime_ns=excluded.mtime_ns, inode=excluded.inode,"
    " sha256=excluded.sha256, context=excluded.context, records=excluded.records,"
    " notes=excluded.notes, seen=excluded.seen, root=excluded.root,"
    " record_sources=excluded.record_sources, record_count=excluded.record_count,"
    " verified=NULL"
)

_SELECT = (
    "SELECT f.path_key, f.size, f.mtime_ns, f.inode, f.sha256, f.context, f.records, f.notes,"
    " f.root, f.record_sources, f.record_count, v.generation FROM source_files f"
    " LEFT JOIN source_verified v ON v.path_key = f.path_key"
)
_NO_NOTES = "[[],[]]"

#: The records in sync: written by us as they are now (content compared), not refused since.
_SYNCED = (
    "SELECT kind, key, content_hash FROM resources WHERE status='synced'"
    " AND server_id IS NOT NULL AND content_hash IS NOT NULL"
)

#: A file's records are not known synced (its row is new, or gone).
_UNVERIFY = "DELETE FROM source_verified WHERE path_key=?"

#: Path keys per ``IN (...)`` query (well under SQLite's and PostgreSQL's parameter limits).
_CHUNK = 500

#: One record a source file mapped to: kind, key, content hash, and the assessment's line
#: in the file (for the "duplicate of the record in file:line" message), or None.
SourceRecord = tuple[str, str, str, int | None]


@dataclass(frozen=True)
class SourceFingerprint:
    """What a source file was when we last read it and what it mapped to."""

    path_key: str
    size: int
    mtime_ns: int
    inode: int
    sha256: str
    context: str
    records: Sequence[SourceRecord]
    #: The notes reading the file gave, then those mapping its records gave.
    notes: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    #: The path key of the folder the file was listed under; None for a file named alone.
    root: str | None = None
    #: Assessment key -> digest of that record's own source content (migration 7).
    record_sources: Mapping[str, str] = field(default_factory=dict)
    #: The state generation at which all its records were last found synced, or None.
    verified: int | None = None


class StoredRecords(Sequence[SourceRecord]):
    """A stored row's records, decoded only when asked for (their count is stored): an
    unchanged re-sync of 100,000 assessments needs only how many there are, or (the first
    one after a write) the plain lists ``lists()`` gives to compare with the state."""

    __slots__ = ("_count", "_items", "_raw")

    def __init__(self, raw: str, count: int | None) -> None:
        self._raw, self._count = raw, count
        self._items: tuple[SourceRecord, ...] | None = None

    def lists(self) -> Sequence[Sequence[Any]]:
        """The records as JSON lists ``[kind, key, hash, line]``, no tuple made per record
        (not kept: 200,000 lists kept alive slow every later garbage collection pass)."""
        if self._items is not None:
            return self._items
        found: list[list[Any]] = json.loads(self._raw)  # C-speed
        return found

    def _decoded(self) -> tuple[SourceRecord, ...]:
        if self._items is None:
            self._items = tuple(map(tuple, self.lists()))  # C-speed
        return self._items

    def __len__(self) -> int:
        return self._count if self._count is not None else len(self._decoded())

    @overload
    def __getitem__(self, index: int) -> SourceRecord: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[SourceRecord]: ...

    def __getitem__(self, index: int | slice) -> SourceRecord | Sequence[SourceRecord]:
        return self._decoded()[index]

    def __iter__(self) -> Iterator[SourceRecord]:
        return iter(self._decoded())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # compared by value, like a list


class SourceFingerprints:
    """The ``source_files`` methods of ``StateStore`` (see the module docstring)."""

    _db: Backend
    _lock: threading.RLock

    def source_fingerprints(
        self, path_keys: Collection[str] | None = None
    ) -> dict[str, SourceFingerprint]:
        """The stored fingerprints of ``path_keys`` (every one when None), keyed by path
        key. A run asks only for the files it lists: a store holding assessment files and
        goal files does not decode the assessment files' rows twice."""
        if path_keys is None:
            with self._lock:
                rows = self._db.execute(_SELECT).fetchall()
            return {r[0]: _fingerprint(r) for r in rows}
        keys = list(path_keys)
        found: dict[str, SourceFingerprint] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            # Only "?" marks are joined into the SQL; the keys travel as parameters.
            where = " WHERE f.path_key IN (" + ",".join("?" * len(chunk)) + ")"
            with self._lock:
                rows = self._db.execute(_SELECT + where, chunk).fetchall()
            found.update((r[0], _fingerprint(r)) for r in rows)
        return found

    def save_source_fingerprints(self, found: Sequence[SourceFingerprint]) -> None:
        """Insert or replace fingerprints, in one transaction."""
        now = time.time()
        rows = [
            (
                f.path_key,
                f.size,
                f.mtime_ns,
                f.inode,
                f.sha256,
                f.context,
                json.dumps(list(f.records), separators=(",", ":"), ensure_ascii=False),
                json.dumps(f.notes, separators=(",", ":"), ensure_ascii=False),
                now,
                f.root,
                _digests_json(f.record_sources) if f.record_sources else None,
                len(f.records),
            )
            for f in found
        ]
        with self._lock, self._db.transaction():
            self._db.executemany(_UPSERT, rows)
            self._db.executemany(_UNVERIFY, [(f.path_key,) for f in found])

    def forget_source_fingerprints(self, path_keys: Sequence[str]) -> None:
        """Drop fingerprints (files that now have problems, or could not be read)."""
        with self._lock, self._db.transaction():
            self._db.executemany(
                "DELETE FROM source_files WHERE path_key=?", [(k,) for k in path_keys]
            )
            self._db.executemany(_UNVERIFY, [(k,) for k in path_keys])

    def source_root_keys(self, roots: Collection[str]) -> dict[str, str]:
        """path key -> root of every fingerprint listed under one of ``roots``."""
        if not roots:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT path_key, root FROM source_files WHERE root IS NOT NULL"
            ).fetchall()
        return {r[0]: r[1] for r in rows if r[1] in roots}

    def set_source_roots(self, rooted: Sequence[tuple[str, str]]) -> None:
        """Set the root (path key, root) files skipped this run were listed under: rows
        stored before migration 6 have none, and a file may now be listed under another."""
        with self._lock, self._db.transaction():
            self._db.executemany(
                "UPDATE source_files SET root=? WHERE path_key=?",
                [(root, key) for key, root in rooted],
            )

    def synced_hashes(self) -> SyncedHashes:
        """(kind, key) -> content hash of every record the server holds as we last wrote
        it: ``synced``, with a server id, and no open dead letter. Kept as one dict per
        record kind (``sync.state.lookups``): no tuple key made per record."""
        by_kind: dict[str, dict[str, str]] = {}
        with self._lock:
            rows = self._db.execute(_SYNCED).fetchall()
            lettered = self._db.execute(
                "SELECT kind, key FROM dead_letters WHERE resolved=0"
            ).fetchall()
        for kind, key, content in rows:  # faster than a query per kind (index look-ups)
            hashes = by_kind.get(kind)
            if hashes is None:
                hashes = by_kind[kind] = {}
            hashes[key] = content
        del rows
        for kind, key in lettered:  # few; one query apiece is slower than subtracting here
            by_kind.get(kind, {}).pop(key, None)
        return SyncedHashes(by_kind)

    def state_generation(self) -> int:
        """The state generation (see the module docstring): read it before the synced
        hashes it vouches for."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='state_generation'").fetchone()
        return int(row[0]) if row else 0

    def mark_sources_verified(self, found: Sequence[tuple[str, int]], generation: int) -> None:
        """These files' records (path key, how many: rows from before migration 7 lack
        the count) were all found synced at ``generation``."""
        with self._lock, self._db.transaction():
            self._db.executemany(
                "INSERT INTO source_verified (path_key, generation) VALUES (?, ?)"
                " ON CONFLICT (path_key) DO UPDATE SET generation=excluded.generation",
                [(key, generation) for key, _ in found],
            )
            self._db.executemany(  # a row is rewritten only when its count is missing
                "UPDATE source_files SET record_count=? WHERE path_key=? AND record_count IS NULL",
                [(count, key) for key, count in found],
            )

    def synced_hash(self, kind: str, key: str) -> str | None:
        """One record's content hash if it counts as synced (as in :meth:`synced_hashes`)."""
        with self._lock:
            row = self._db.execute(
                "SELECT content_hash FROM resources WHERE kind=? AND key=? AND status='synced'"
                " AND server_id IS NOT NULL AND content_hash IS NOT NULL",
                (kind, key),
            ).fetchone()
            if row is None:
                return None
            lettered = self._db.execute(
                "SELECT 1 FROM dead_letters WHERE resolved=0 AND kind=? AND key=?", (kind, key)
            ).fetchone()
        return None if lettered else str(row[0])

    def instruments_fingerprint(self) -> dict[str, Any]:
        """What :meth:`set_instruments_fingerprint` kept ({} before)."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key='instruments_fingerprint'"
            ).fetchone()
        found = json.loads(row[0]) if row else {}
        return found if isinstance(found, dict) else {}

    def set_instruments_fingerprint(self, value: dict[str, Any]) -> None:
        """The instruments' records a sync built, and the hash of what they were built from
        (``app.instrument_fingerprint``), in ``meta``."""
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('instruments_fingerprint', ?)"
                " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
                (json.dumps(value, sort_keys=True),),
            )

    def set_source_figures(self, figures: dict[str, int | float]) -> None:
        """The last run's source figures (files read, skipped, records skipped)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('sources_last_run', ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET value=excluded.value",
                (json.dumps(figures, sort_keys=True),),
            )

    def source_figures(self) -> dict[str, int | float]:
        """What :meth:`set_source_figures` kept ({} before the first fingerprinted run)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='sources_last_run'").fetchone()
        found = json.loads(row[0]) if row else {}
        return found if isinstance(found, dict) else {}


class StoredDigests(Mapping[str, str]):
    """A stored row's ``record_sources``, decoded only when asked for: only a file read
    again needs them, not the thousands skipped."""

    __slots__ = ("_items", "raw")

    def __init__(self, raw: str) -> None:
        self.raw = raw
        self._items: dict[str, str] | None = None

    def _decoded(self) -> dict[str, str]:
        if self._items is None:
            found = json.loads(self.raw)
            self._items = found if isinstance(found, dict) else {}
        return self._items

    def __getitem__(self, key: str) -> str:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())


def _digests_json(digests: Mapping[str, str]) -> str:
    """``record_sources`` as stored (a stored row's text as it was read)."""
    if isinstance(digests, StoredDigests):
        return digests.raw
    return json.dumps(dict(digests), separators=(",", ":"), ensure_ascii=False)


def _fingerprint(row: tuple[Any, ...]) -> SourceFingerprint:
    records = StoredRecords(row[6], row[10])
    read, mapped = ([], []) if row[7] == _NO_NOTES else json.loads(row[7])
    return SourceFingerprint(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        records,
        (tuple(read), tuple(mapped)),
        row[8],
        StoredDigests(row[9]) if row[9] else {},
        row[11],
    )
