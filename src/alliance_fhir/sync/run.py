"""What one sync run is, apart from how it writes: the client it needs, who watches its
progress, its result, and the bookkeeping its worker threads share."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from alliance_fhir.adapters.record import Desired
from alliance_fhir.fhir import ReadResult
from alliance_fhir.sync.plan import Action
from alliance_fhir.sync.references import PersonResolver

__all__ = ["LastWindow", "Progress", "RunContext", "SyncClient", "SyncResult", "Unchanged"]


class Progress(Protocol):
    """Where a long run reports how far it got (the CLI draws a bar; nothing else needs it)."""

    def start(self, total: int) -> None: ...

    def advance(self, done: int) -> None: ...


class SyncClient(Protocol):
    """The part of FhirClient the sync engine uses (a seam for tests and dry runs)."""

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]: ...

    def search(self, resource_type: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]: ...

    def read(self, resource_type: str, resource_id: str) -> ReadResult: ...


@dataclass
class SyncResult:
    """What a run did. ``ok`` is false when any record was rejected or left in conflict."""

    run_id: str
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    #: Things the user should know that are not failures (one line each).
    notes: list[str] = field(default_factory=list)
    bundles: int = 0
    seconds: float = 0.0
    #: Records merged without a stored base (state from before bases were kept).
    bases_adopted: int = 0
    #: Source files skipped as unchanged (their records are counted ``unchanged``).
    files_skipped: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.counts["rejected"] or self.counts["conflict"] or self.counts["unconfirmed"]
        )

    def summary(self) -> dict[str, int]:
        keys = ("created", "updated", "unchanged", "conflict", "rejected")
        return {k: self.counts[k] for k in keys}


@dataclass(frozen=True)
class Unchanged:
    """A window of a run known unchanged without planning: ``records`` from ``files``
    source files that are unchanged and whose records are all synced (``app.fingerprints``)."""

    records: int
    files: int


class LastWindow(list[Desired]):
    """A run's last window, so marked by whoever produces the windows (the engine cannot
    know it without waiting for the next one). Its bundles are cut finer, so that the
    connections finish together: cut like the others, the run often ended with one
    connection sending the last large bundle alone."""


class RunContext:
    """Per-run mutable state shared by the worker threads (guarded by one lock)."""

    def __init__(
        self,
        people: PersonResolver,
        known: dict[str, str],
        conditional: dict[str, str],
        result: SyncResult,
    ) -> None:
        self.people = people
        self.known = known
        self.conditional = conditional
        self.result = result
        self.existing: list[Action] = []
        #: Merged updates refused with 412, to merge again on the new version.
        self.remerge: list[Action] = []
        self._remerged: set[tuple[str, str]] = set()
        #: Records this window created, to look up once it is done (``verify_once``).
        self.sample: list[Desired] = []
        self._lock = threading.Lock()

    def keep_sample(self, created: list[Desired], size: int) -> None:
        """Keep the first ``size`` records the window created (the first bundle's)."""
        with self._lock:
            if not self.sample:
                self.sample = created[:size]

    def remerge_once(self, action: Action) -> bool:
        """Queue a 412'd merged update for one more merge; False if it had its chance."""
        ident = (action.desired.kind, action.desired.key)
        with self._lock:
            if ident in self._remerged:
                return False
            self._remerged.add(ident)
            self.remerge.append(action)
            return True

    def adopt(self) -> None:
        with self._lock:
            self.result.bases_adopted += 1

    def count_bundle(self) -> None:
        with self._lock:
            self.result.bundles += 1

    def count(self, what: str) -> None:
        with self._lock:
            self.result.counts[what] += 1

    def uncount(self, what: str) -> None:
        with self._lock:
            self.result.counts[what] -= 1

    def fail(self, message: str) -> None:
        with self._lock:
            self.result.failures.append(message)
