"""What the state store hands out: one record's state, a dead letter, a run; and the words
(statuses, outcomes) stored in it. Plain values, the same whatever the backend."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alliance_fhir.exceptions import outcome_summary

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


def record_state(row: tuple[Any, ...]) -> RecordState:
    """A ``RecordState`` from the row the store selects for it: kind, key, resource_type,
    server_id, version_id, content_hash, status, last_sync, conflict_fields."""
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


def redact_reason(reason: str, outcome: Mapping[str, Any] | None) -> str:
    """``reason`` with the OperationOutcome's text (as ``str(FhirError)`` embeds it) replaced
    by its codes: a server may echo the request back in ``diagnostics``."""
    clear = outcome_summary(outcome)
    if not clear:
        return reason
    safe = outcome_summary(outcome, redact_text=True)
    return reason.replace(clear, safe)
