"""The state store: what we wrote, where it lives on the server, and how each run went.

``store`` (the queries, one lock), ``backend`` (the seam) with ``sqlite`` and ``postgres``
behind it, ``migrations`` (the versioned schema, both dialects), ``records`` (what the store
hands out), ``owners`` (is a run's process still alive), ``work`` (the work queue several
daemons share). ``open_store(url)`` picks the backend from a ``state_url``:
``sqlite:///PATH`` or ``postgresql://USER@HOST:PORT/DB``.
"""

from __future__ import annotations

from alliance_fhir.exceptions import StateError
from alliance_fhir.sync.state.backend import Backend
from alliance_fhir.sync.state.migrations import MIGRATIONS, SCHEMA_VERSION, Migration
from alliance_fhir.sync.state.records import (
    FAILED_INPUT,
    INTERRUPTED,
    STATUSES,
    DeadLetter,
    RecordState,
    RunRecord,
    redact_reason,
)
from alliance_fhir.sync.state.store import StateStore
from alliance_fhir.sync.state.work import Claim, LiveWorker, QueueCounts, WorkQueue

__all__ = [
    "FAILED_INPUT",
    "INTERRUPTED",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Claim",
    "DeadLetter",
    "LiveWorker",
    "Migration",
    "QueueCounts",
    "RecordState",
    "RunRecord",
    "StateStore",
    "WorkQueue",
    "open_store",
    "open_work_queue",
    "redact_reason",
    "sqlite_path",
]

SQLITE_PREFIX = "sqlite:///"


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL (``sqlite:////abs/path`` for an absolute one, as
    SQLAlchemy spells it), or None for another scheme."""
    return url[len(SQLITE_PREFIX) :] if url.startswith(SQLITE_PREFIX) else None


def open_store(url: str, *, password: str | None = None, schema: str | None = None) -> StateStore:
    """The state store a ``state_url`` names, migrated to this release's schema.
    ``password`` is for PostgreSQL (never part of the URL); so is ``schema`` (a tenant's
    partition: created when missing, then the connection's search path)."""
    path = sqlite_path(url)
    if path is not None:
        if not path:
            raise StateError("state_url sqlite:/// names no file")
        return StateStore(path)
    return StateStore(backend=_postgres(url, password, schema))


def open_work_queue(
    url: str, *, password: str | None = None, owner: str | None = None, schema: str | None = None
) -> WorkQueue:
    """The work queue of the store ``url`` names, on a connection of its own. Open the
    store first (``open_store``): that runs the migrations which create its tables."""
    path = sqlite_path(url)
    if path is not None:
        from alliance_fhir.sync.state.sqlite import SqliteBackend

        return WorkQueue(SqliteBackend(path), owner)
    return WorkQueue(_postgres(url, password, schema), owner)


def _postgres(url: str, password: str | None, schema: str | None = None) -> Backend:
    if url.split("://", 1)[0] in ("postgresql", "postgres"):
        # Imported here: psycopg is needed only by stores on PostgreSQL.
        from alliance_fhir.sync.state.postgres import PostgresBackend

        return PostgresBackend(url, password=password, schema=schema)
    raise StateError("state_url must start with sqlite:/// or postgresql://")
