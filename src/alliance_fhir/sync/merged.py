"""The update of a record others may edit: one read of the server's version and the
three-way merge against the stored base (``merge3``), as the engine's build step uses it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alliance_fhir.adapters.record import Desired
from alliance_fhir.fhir import ReadResult
from alliance_fhir.log import get_logger
from alliance_fhir.sync.merge3 import MergeRules, Policy, Update, merged_update
from alliance_fhir.sync.state import StateStore

__all__ = ["adopted_note", "read_and_merge"]

log = get_logger("alliance_fhir.sync")


def read_and_merge(
    read: Callable[[str, str], ReadResult],
    store: StateStore,
    desired: Desired,
    server_id: str,
    ours: dict[str, Any],
    rules: MergeRules,
    policy: Policy,
    *,
    run_id: str,
) -> tuple[Update, str | None]:
    """The merge of ``ours`` with the server's current version, and that version (what
    If-Match must carry: a write racing another edit then fails with 412). A conflict is
    logged with its field names only: values may be patient data."""
    current = read(desired.resource_type, server_id)
    update = merged_update(
        store.base(desired.kind, desired.key), current.resource, ours, rules, policy
    )
    if update.values:
        store.set_conflict_values(desired.kind, desired.key, update.values)
    if update.conflicts:
        log.info(
            "sync.merge_conflict",
            run_id=run_id,
            kind=desired.kind,
            fields=",".join(update.conflicts),
            policy=policy,
        )
    return update, current.version_id


def adopted_note(records: int) -> str:
    """The run's one note about records merged with the server's content as their base."""
    return (
        f"{records} record(s) had no stored merge base (state from an earlier version): "
        "the server's current content was taken as their base"
    )
