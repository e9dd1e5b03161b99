"""The work queue several daemons share through the state store (migration 5).

Why a table of our own with ``SELECT ... FOR UPDATE SKIP LOCKED`` and not a task-queue
library (procrastinate): our work items are not jobs someone enqueues once; every worker
re-derives them from the sources each cycle (the configured files, its inbox, the monitor's
pull), and the work is idempotent already (conditional creates on our identifiers, hashes in
the state store). What we need is "who does this item now, and was it done at this
fingerprint": one row per item. procrastinate would bring its own schema, worker model,
retries and job history that we would have to keep in step with that, beside ours.

* A **work item** is a row keyed by a hash (``kind:sha256``; never a file name, which may be
  a person's name). ``offer`` upserts what a worker found this cycle with its current
  *fingerprint* (file stat + reading context; a time bucket for the monitor).
* An item is **pending** while ``done_fingerprint`` differs from ``fingerprint`` and no live
  lease holds it. ``claim`` takes one in a short transaction (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serialises writers already) and sets
  ``lease_owner`` and ``lease_until``. No transaction stays open while the item is worked on.
* ``renew`` (the heartbeat) pushes ``lease_until`` on; it reports a lease another worker took
  over (``lost``). A worker that dies stops renewing; once ``lease_until`` has passed any
  worker may claim the item again.
* ``done`` marks the item with the fingerprint it was claimed at, so other workers skip it
  until its source changes; ``release`` gives it back (at once, or not before a delay after
  a failure); ``release_all`` is the drain.

Times come from the database's clock (``lease_until`` and the workers' ``expires``), so the
hosts' clocks need not agree. Each queue has its own connection (the heartbeat thread uses
it while the main thread talks to the FHIR server), guarded by one lock.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from alliance_fhir.sync.state.backend import Backend, Rows

__all__ = ["Claim", "LiveWorker", "QueueCounts", "WorkQueue", "new_owner"]

#: The database's clock in epoch seconds, per dialect.
_NOW = {
    "postgresql": "EXTRACT(EPOCH FROM clock_timestamp())::double precision",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}

#: A claim's row lock: PostgreSQL skips rows other claimers hold; SQLite has one writer.
_SKIP_LOCKED = {"postgresql": " FOR UPDATE SKIP LOCKED", "sqlite": ""}

_PENDING = "(done_fingerprint IS NULL OR done_fingerprint <> fingerprint)"


def new_owner() -> str:
    """A worker id: host, pid and a random part (a pid is reused after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


@dataclass(frozen=True)
class Claim:
    """An item this worker holds: its key and the fingerprint it was claimed at."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class QueueCounts:
    pending: int
    leased: int
    done: int


@dataclass(frozen=True)
class LiveWorker:
    """A worker whose heartbeat has not expired (no PHI: host, pid, state, times)."""

    worker_id: str
    host: str
    pid: int
    state: str
    seconds_since_heartbeat: float
    held: int


class WorkQueue:
    """Work items and leases on one connection (see the module docstring)."""

    def __init__(self, backend: Backend, owner: str | None = None) -> None:
        self._db = backend
        self.owner = owner or new_owner()
        self._lock = threading.Lock()
        self._now = _NOW[backend.dialect]
        self._skip = _SKIP_LOCKED[backend.dialect]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _sql(self, sql: str) -> str:
        """The dialect's clock and row lock in place of ``$now``, ``$skip``, ``$pending``
        (constants of this module, never input)."""
        return (
            sql.replace("$pending", _PENDING)
            .replace("$now", self._now)
            .replace("$skip", self._skip)
        )

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        return self._db.execute(self._sql(sql), args)

    def _executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(self._sql(sql), rows)

    # Items

    def offer(self, kind: str, items: Iterable[tuple[str, str]]) -> int:
        """Upsert ``(key, fingerprint)`` items of ``kind`` seen now; the number offered. An
        item's done mark stays: it is pending again only when its fingerprint changed."""
        rows = [(key, kind, fp) for key, fp in items]
        if not rows:
            return 0
        with self._lock, self._db.transaction():
            self._executemany(
                "INSERT INTO work_items (item_key, kind, fingerprint, seen)"
                " VALUES (?, ?, ?, $now) ON CONFLICT (item_key) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, seen = excluded.seen",
                rows,
            )
        return len(rows)

    def forget(self, kind: str, *, unseen_for: float) -> int:
        """Drop items of ``kind`` nobody has offered for ``unseen_for`` seconds (sources
        that are gone) and that no live lease holds; how many."""
        with self._lock:
            done = self._execute(
                "DELETE FROM work_items WHERE kind = ? AND seen < $now - ? AND lease_until < $now",
                (kind, unseen_for),
            )
        return max(done.rowcount, 0)

    def claim(
        self, kind: str, *, lease_seconds: float, key: str | None = None, since: float = 0.0
    ) -> Claim | None:
        """Lease one pending item of ``kind`` (``key``: that one only) for ``lease_seconds``;
        None when nothing is claimable. ``since``: only items offered at or after that
        database time (this cycle's sources; a file that vanished is not claimed)."""
        where = "kind = ? AND seen >= ? AND $pending AND lease_until <= $now"
        args: list[object] = [kind, since]
        if key is not None:
            where += " AND item_key = ?"
            args.append(key)
        sql = (
            "UPDATE work_items SET lease_owner = ?, lease_until = $now + ?,"
            " attempts = attempts + 1 WHERE item_key = (SELECT item_key FROM work_items"
            " WHERE $where ORDER BY lease_until, item_key LIMIT 1$skip)"
            " RETURNING item_key, fingerprint"
        )
        sql = sql.replace("$where", where)
        with self._lock, self._db.transaction():
            row = self._execute(sql, (self.owner, lease_seconds, *args)).fetchone()
        return Claim(str(row[0]), str(row[1])) if row else None

    def renew(self, keys: Sequence[str], *, lease_seconds: float) -> list[str]:
        """Push the leases of ``keys`` on; the keys whose lease another worker has taken."""
        lost: list[str] = []
        with self._lock:
            for key in keys:
                done = self._execute(
                    "UPDATE work_items SET lease_until = $now + ?"
                    " WHERE item_key = ? AND lease_owner = ?",
                    (lease_seconds, key, self.owner),
                )
                if done.rowcount == 0:
                    lost.append(key)
        return lost

    def done(self, claim: Claim) -> bool:
        """Mark a held item done at its claimed fingerprint; False if the lease was lost."""
        with self._lock:
            done = self._execute(
                "UPDATE work_items SET done_fingerprint = ?, done_at = $now,"
                " lease_owner = NULL, lease_until = 0 WHERE item_key = ? AND lease_owner = ?",
                (claim.fingerprint, claim.key, self.owner),
            )
        return done.rowcount > 0

    def release(self, key: str, *, retry_after: float = 0.0) -> bool:
        """Give a held item back, claimable again after ``retry_after`` seconds."""
        with self._lock:
            done = self._execute(
                "UPDATE work_items SET lease_owner = NULL, lease_until = $now + ?"
                " WHERE item_key = ? AND lease_owner = ?",
                (retry_after, key, self.owner),
            )
        return done.rowcount > 0

    def release_all(self) -> int:
        """The drain: every lease this worker holds ends now; how many there were."""
        with self._lock:
            done = self._execute(
                "UPDATE work_items SET lease_owner = NULL, lease_until = $now"
                " WHERE lease_owner = ?",
                (self.owner,),
            )
        return max(done.rowcount, 0)

    def now(self) -> float:
        """The database's clock (what ``since`` compares with)."""
        with self._lock:
            return float(self._execute("SELECT $now").fetchone()[0])

    # Workers

    def heartbeat(self, *, lease_seconds: float, state: str = "running") -> None:
        """Say this worker is alive for another ``lease_seconds`` (registers it the first
        time); rows of workers gone for a day are dropped on the way."""
        with self._lock, self._db.transaction():
            self._execute(
                "INSERT INTO workers (worker_id, host, pid, started, heartbeat, expires, state)"
                " VALUES (?, ?, ?, $now, $now, $now + ?, ?)"
                " ON CONFLICT (worker_id) DO UPDATE SET heartbeat = excluded.heartbeat,"
                " expires = excluded.expires, state = excluded.state",
                (self.owner, socket.gethostname(), os.getpid(), lease_seconds, state),
            )
            self._execute("DELETE FROM workers WHERE expires < $now - 86400")

    def leave(self) -> None:
        """This worker stops: its row goes (its leases are released by ``release_all``)."""
        with self._lock:
            self._execute("DELETE FROM workers WHERE worker_id = ?", (self.owner,))

    # Reading

    def counts(self) -> QueueCounts:
        """Items pending (including ones given back to retry later), leased (a live lease)
        and done at their current fingerprint."""
        with self._lock:
            row = self._execute(
                "SELECT COALESCE(SUM(CASE WHEN $pending AND (lease_owner IS NULL"
                " OR lease_until < $now) THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN $pending AND lease_owner IS NOT NULL"
                " AND lease_until >= $now THEN 1 ELSE 0 END), 0),"
                " COALESCE(SUM(CASE WHEN $pending THEN 0 ELSE 1 END), 0) FROM work_items"
            ).fetchone()
        return QueueCounts(int(row[0]), int(row[1]), int(row[2]))

    def live_workers(self) -> list[LiveWorker]:
        with self._lock:
            rows = self._execute(
                "SELECT w.worker_id, w.host, w.pid, w.state, $now - w.heartbeat,"
                " (SELECT COUNT(*) FROM work_items i WHERE i.lease_owner = w.worker_id"
                " AND i.lease_until >= $now)"
                " FROM workers w WHERE w.expires >= $now ORDER BY w.started, w.worker_id"
            ).fetchall()
        return [
            LiveWorker(str(r[0]), str(r[1]), int(r[2]), str(r[3]), max(float(r[4]), 0.0), int(r[5]))
            for r in rows
        ]
