"""Plan: compare what we want with what the state store says we last wrote. No I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from alliance_fhir.adapters.record import Desired
from alliance_fhir.sync.state import RecordState

Op = Literal["create", "update", "unchanged", "conflict"]

__all__ = ["Action", "Op", "SyncPlan", "make_plan"]


@dataclass(frozen=True)
class Action:
    op: Op
    desired: Desired
    state: RecordState | None


@dataclass
class SyncPlan:
    """One decision per record of a run (named apart from ``goals.Plan``, a goal plan)."""

    actions: list[Action] = field(default_factory=list)

    @property
    def writes(self) -> list[Action]:
        return [a for a in self.actions if a.op in ("create", "update")]

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(a.op for a in self.actions).items()))


def make_plan(
    desired: Iterable[Desired],
    states: Mapping[tuple[str, str], RecordState],
    *,
    overwrite_conflicts: bool = False,
    retry_conflict: Callable[[Desired], bool] | None = None,
) -> SyncPlan:
    """Decide per record: create, update, leave alone, or leave in conflict.

    * never written, or written but the server id is unknown -> ``create`` (conditional, so
      a record that did reach the server before a crash is found, not duplicated);
    * same hash as last written and in sync -> ``unchanged``: costs no request;
    * in conflict (someone else changed it) -> stays ``conflict`` unless the policy is
      overwrite (``ours-wins``) or ``retry_conflict`` says so (a merged record under
      ``ehr-wins``), even if our input changed: a human decides;
    * otherwise -> ``update`` with the version we last saw.

    A record read from the server (it carries the server's ``id``, e.g. a goal the EHR made)
    is an update of that resource even without state: it never becomes a second copy.
    """
    plan = SyncPlan()
    for record in desired:
        state = states.get((record.kind, record.key)) or _known_on_server(record)
        if state is None or state.server_id is None:
            op: Op = "create"
        elif state.status == "conflict" and not (
            overwrite_conflicts or (retry_conflict is not None and retry_conflict(record))
        ):
            op = "conflict"
        elif state.status == "synced" and state.content_hash == record.hash:
            op = "unchanged"
        else:
            op = "update"
        plan.actions.append(Action(op, record, state))
    return plan


def _known_on_server(record: Desired) -> RecordState | None:
    server_id = record.resource.get("id")
    if not isinstance(server_id, str) or not server_id:
        return None
    return RecordState(
        kind=record.kind,
        key=record.key,
        resource_type=record.resource_type,
        server_id=server_id,
        version_id=None,
        content_hash=None,
        status="synced",
        last_sync=0.0,
    )
