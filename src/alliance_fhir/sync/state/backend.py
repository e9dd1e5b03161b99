"""The seam between the state store and its database: one small protocol, two backends.

``StateStore`` writes its SQL once, with ``?`` placeholders and SQL both SQLite and
PostgreSQL accept (``INSERT ... ON CONFLICT``, qualified columns in ``DO UPDATE``); a backend
runs it on one connection and owns what differs: connecting, transactions, placeholders,
what the schema holds, and (PostgreSQL) translating driver errors into ``StateError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]


class Rows(Protocol):
    """What a statement gives back (``sqlite3.Cursor`` and ``psycopg.Cursor`` both are)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Backend(Protocol):
    """One open connection to a state store's database. Not thread-safe by itself: the
    store serialises every call with its own lock."""

    @property
    def dialect(self) -> Dialect:
        """Which SQL dialect the migrations use."""
        ...

    @property
    def where(self) -> str:
        """Where the store is, for messages: a file path, or a URL without any password."""
        ...

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Rows:
        """Run one statement written with ``?`` placeholders."""
        ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """Everything inside lands or nothing does; the writer holds the store meanwhile."""
        ...

    def lock_schema(self) -> None:
        """Inside a transaction: keep other processes from migrating the schema at the
        same time (SQLite's ``BEGIN IMMEDIATE`` does already)."""
        ...

    def tables(self) -> set[str]: ...

    def columns(self, table: str) -> set[str]: ...

    def close(self) -> None: ...
