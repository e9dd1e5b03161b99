"""Whole-state read views a run builds once: cheap to build, cheap to ask.

A re-sync of 100,000 assessments reads 200,000 rows of ``resources`` once (the synced
hashes that decide whether a source file is skipped, the states a dry-run plan looks up) and
asks about a small part of them. A Python object per row (a tuple key, a ``RecordState``)
is what cost the time, and the garbage collection passes over them: ``SyncedHashes`` keeps
one ``{key: hash}`` dict per record kind (no tuple key per record; str-only dicts are not
tracked by the collector); ``RecordStates`` reads a few records one by one, or every row
when many are asked for, and makes a ``RecordState`` only for a record asked for (a dry-run
plan of a few changed records asks for few). Both are read-only ``Mapping``s keyed by
``(kind, key)`` and compare equal to the dicts they replace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from alliance_fhir.sync.state.records import RecordState, record_state

__all__ = ["RecordStates", "SyncedHashes"]

_NONE: dict[str, str] = {}


class SyncedHashes(Mapping[tuple[str, str], str]):
    """(kind, key) -> content hash of every record in sync (``synced_hashes``)."""

    __slots__ = ("_by_kind",)

    def __init__(self, by_kind: dict[str, dict[str, str]]) -> None:
        self._by_kind = by_kind

    def hash_of(self, kind: str, key: str) -> str | None:
        """The synced hash of one record, or None (no tuple made for the question)."""
        return self._by_kind.get(kind, _NONE).get(key)

    def holds(self, records: Iterable[Sequence[Any]]) -> bool:
        """Every ``(kind, key, content hash, ...)`` record is synced with that hash."""
        by_kind = self._by_kind
        return all(by_kind.get(r[0], _NONE).get(r[1]) == r[2] for r in records)

    def __getitem__(self, item: tuple[str, str]) -> str:
        return self._by_kind.get(item[0], _NONE)[item[1]]

    def __contains__(self, item: object) -> bool:
        if not (isinstance(item, tuple) and len(item) == 2):
            return False
        return item[1] in self._by_kind.get(item[0], _NONE)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for kind, hashes in self._by_kind.items():
            for key in hashes:
                yield kind, key

    def __len__(self) -> int:
        return sum(len(hashes) for hashes in self._by_kind.values())


class RecordStates(Mapping[tuple[str, str], RecordState]):
    """(kind, key) -> ``RecordState``, read from the store as asked: the first
    ``ONE_BY_ONE`` records one indexed query apiece (a dry-run plan of 80 changed records
    among 200,000 reads 80 rows), then every row at once, each made a ``RecordState`` only
    when asked for. Iterating or counting reads every row."""

    __slots__ = ("_asked", "_load", "_one", "_rows")

    #: Look-ups answered one query apiece before every row is read at once.
    ONE_BY_ONE = 256

    def __init__(
        self,
        load: Callable[[], Iterable[tuple[Any, ...]]],
        one: Callable[[str, str], tuple[Any, ...] | None],
    ) -> None:
        self._load, self._one = load, one
        self._rows: dict[tuple[str, str], tuple[Any, ...]] | None = None
        self._asked = 0

    def _all(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        if self._rows is None:
            self._rows = {(row[0], row[1]): row for row in self._load()}
        return self._rows

    def _row(self, item: tuple[str, str]) -> tuple[Any, ...] | None:
        if self._rows is None and self._asked < self.ONE_BY_ONE:
            self._asked += 1
            return self._one(*item)
        return self._all().get(item)

    def __getitem__(self, item: tuple[str, str]) -> RecordState:
        row = self._row(item)
        if row is None:
            raise KeyError(item)
        return record_state(row)

    def __contains__(self, item: object) -> bool:
        if not (isinstance(item, tuple) and len(item) == 2):
            return False
        return self._row((str(item[0]), str(item[1]))) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())
