"""The SQLite backend: one file, WAL mode so a reader (``status``, the metrics endpoint)
never blocks the writer. The file is patient data at rest: 0600 in a 0700 folder."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alliance_fhir.exceptions import StateError
from alliance_fhir.private_files import FILE_MODE, private_dir


class SqliteBackend:
    """A state store in one SQLite file (or ``:memory:``)."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.where = str(path)
        if str(path) != ":memory:":
            _create_private(Path(path))
        try:
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state store {self.where} is unusable: {exc}") from exc

    def execute(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def lock_schema(self) -> None:
        """``BEGIN IMMEDIATE`` holds the file's write lock already."""

    def tables(self) -> set[str]:
        rows = self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        return {str(r[0]) for r in rows}

    def columns(self, table: str) -> set[str]:
        return {str(row[1]) for row in self._db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self._db.close()


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
