"""The PostgreSQL backend (psycopg 3): several processes and hosts share one state store.

The URL names user, host, port and database and never a password: that comes from the
caller (``state_password_file`` / ``ALLIANCE_FHIR_STATE_PASSWORD``) or libpq's own
``~/.pgpass``. One autocommit connection; ``transaction()`` is ``BEGIN``/``COMMIT``. Driver
errors become ``StateError`` here, in one place, with the URL shown without a password.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from alliance_fhir.exceptions import StateError

#: Any constant: the advisory lock key migrations hold, so two processes opening a new store
#: at once do not both create it.
_SCHEMA_LOCK = 7_031_742_001

SCHEMES = ("postgresql", "postgres")


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` password and without its query (which may
    carry one): safe for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class PostgresBackend:
    """A state store in a PostgreSQL database (the schema on the connection's search path)."""

    dialect: Literal["postgresql"] = "postgresql"

    def __init__(self, url: str, *, password: str | None = None, schema: str | None = None) -> None:
        self.where = display_url(url)
        extra: dict[str, Any] = {}
        if password is not None:
            extra["password"] = password
        try:
            self._db = psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=10,
                application_name="alliance-fhir",
                **extra,
            )
        except psycopg.Error as exc:
            raise StateError(f"state store {self.where} is unusable: {_first_line(exc)}") from exc
        if schema is not None:
            self._use_schema(schema)

    def _use_schema(self, schema: str) -> None:
        """Make ``schema`` (a tenant's partition) the only one on the search path, creating it
        when missing: asked first, so a role without CREATE on the database can use schemas
        made for it beforehand."""
        self.where = f"{self.where} schema {schema}"
        name = sql.Identifier(schema)
        try:
            found = self._db.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
            if found is None:
                self._db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(name))
            self._db.execute(sql.SQL("SET search_path TO {}").format(name))
        except psycopg.Error as exc:
            self._db.close()
            raise StateError(f"state store {self.where} is unusable: {_first_line(exc)}") from exc

    def execute(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        try:
            return self._db.execute(_placeholders(sql), tuple(args))
        except psycopg.Error as exc:
            raise StateError(f"state store {self.where}: {_first_line(exc)}") from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self._db.cursor() as cur:
                cur.executemany(_placeholders(sql), [tuple(r) for r in rows])
        except psycopg.Error as exc:
            raise StateError(f"state store {self.where}: {_first_line(exc)}") from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        try:
            with self._db.transaction():
                yield
        except psycopg.Error as exc:
            raise StateError(f"state store {self.where}: {_first_line(exc)}") from exc

    def lock_schema(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))

    def tables(self) -> set[str]:
        rows = self.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return {str(r[0]) for r in rows.fetchall()}

    def columns(self, table: str) -> set[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {str(r[0]) for r in rows.fetchall()}

    def close(self) -> None:
        self._db.close()


def _placeholders(sql: str) -> str:
    """The store's ``?`` placeholders as psycopg's ``%s`` (its SQL holds no literal ``?``
    or ``%``)."""
    return sql.replace("?", "%s")


def _first_line(exc: BaseException) -> str:
    """The driver's message, first line: the rest may quote the statement's context."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
