"""Many daemons, one PostgreSQL state store: the API surface of the shared work queue.

The daemon (``daemon.workers``) sees only this: whether the store is shared (PostgreSQL),
a queue on a connection of its own, and the work items of this cycle (``app.work_items``).
``status`` reads the queue's figures here. The queue itself is ``sync.state.work`` (why a
table of our own and not a task-queue library is said there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alliance_fhir.api import AllianceFhir
from alliance_fhir.app.fingerprints import context_hash
from alliance_fhir.app.work_items import (
    INBOX,
    MONITOR,
    PUBLISH,
    SOURCE,
    WorkItem,
    inbox_items,
    monitor_item,
    publish_item,
    source_items,
)
from alliance_fhir.sync.state import (
    Claim,
    LiveWorker,
    QueueCounts,
    WorkQueue,
    open_work_queue,
    sqlite_path,
)

__all__ = [
    "INBOX",
    "MONITOR",
    "PUBLISH",
    "SOURCE",
    "Claim",
    "LiveWorker",
    "QueueCounts",
    "QueueStatus",
    "WorkItem",
    "WorkQueue",
    "cycle_items",
    "inbox_work",
    "monitor_item",
    "queue_status",
    "shared_store",
    "work_queue",
]


def shared_store(api: AllianceFhir) -> bool:
    """True when the state store is PostgreSQL: several daemons may share it, leases
    coordinate them. A SQLite store keeps one daemon (its lock file)."""
    return sqlite_path(api.settings.effective_state_url) is None


def work_queue(api: AllianceFhir) -> WorkQueue:
    """The store's work queue on a connection of its own (the store is opened, and so
    migrated, first)."""
    api.store  # noqa: B018 - opening the store runs the migrations that make the tables
    url = api.settings.effective_state_url
    password = api.settings.secret("state_password") if shared_store(api) else None
    return open_work_queue(url, password=password, schema=api.settings.state_schema)


@dataclass(frozen=True)
class CycleItems:
    """This cycle's items: the publish singleton and one per configured source file."""

    publish: WorkItem
    sources: list[WorkItem] = field(default_factory=list)


def _context(api: AllianceFhir, labels_only: bool) -> str:
    return context_hash(api.library, api.settings, labels_only=labels_only)


def cycle_items(api: AllianceFhir, *, labels_only: bool) -> CycleItems:
    """The publish item and the configured assessment and goal files, as work items."""
    context = _context(api, labels_only)
    settings = api.settings
    return CycleItems(
        publish_item(context), source_items(settings.assessments, settings.goals, context)
    )


def inbox_work(api: AllianceFhir, paths: Sequence[Path]) -> list[WorkItem]:
    """This host's settled inbox files as work items."""
    return inbox_items(paths, _context(api, False))


@dataclass(frozen=True)
class QueueStatus:
    """What ``status`` shows of the queue: counts and live workers (no PHI)."""

    counts: QueueCounts
    workers: list[LiveWorker]

    @property
    def empty(self) -> bool:
        c = self.counts
        return not (c.pending or c.leased or c.done or self.workers)


def queue_status(api: AllianceFhir) -> QueueStatus:
    queue = work_queue(api)
    try:
        return QueueStatus(queue.counts(), queue.live_workers())
    finally:
        queue.close()
