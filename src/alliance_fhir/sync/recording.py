"""What the sync engine writes to the state store once the server has answered.

Every state row comes from what the server said: a record ``synced`` (written, found
unchanged, or our own earlier write behind a 412), or ``rejected`` / ``conflict`` with a dead
letter. One method writes the ``synced`` row (:meth:`StateRecording._synced`); the callers
hold the state store's transaction (one per bundle), so a crash leaves whole bundles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.adapters.record import Desired
from alliance_fhir.exceptions import ConflictError, FhirError
from alliance_fhir.sync.merge3 import MergeRules, with_ids
from alliance_fhir.sync.plan import Action
from alliance_fhir.sync.run import RunContext, SyncClient
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.strategies import Entry

__all__ = ["StateRecording"]


class StateRecording:
    """The state-writing half of ``SyncEngine`` (a mixin: it uses the engine's client,
    store, merge rules and conflict policy)."""

    client: SyncClient
    store: StateStore
    mergers: dict[str, MergeRules]

    def _rules(self, record: Desired) -> MergeRules | None:
        return self.mergers.get(record.kind) if record.update_mode == "merge" else None

    def _base_of(self, desired: Desired, sent: dict[str, Any]) -> dict[str, Any] | None:
        rules = self._rules(desired)
        return rules.owned(sent) if rules is not None else None

    def _synced(
        self,
        d: Desired,
        ctx: RunContext,
        db: Any,
        *,
        server_id: str | None,
        version: str | None,
        content: str | None,
        base: Mapping[str, Any] | None,
    ) -> None:
        """The one ``synced`` row: the server holds ``content`` (None: not known to be ours
        yet) at ``server_id``/``version`` (None keeps the stored one)."""
        self.store.record(
            kind=d.kind,
            key=d.key,
            resource_type=d.resource_type,
            server_id=server_id,
            version_id=version,
            content_hash=content,
            status="synced",
            run_id=ctx.result.run_id,
            db=db,
            base=base,
        )

    def _unchanged(
        self,
        d: Desired,
        server_id: str,
        version: str | None,
        sent: dict[str, Any],
        ctx: RunContext,
        db: Any,
    ) -> None:
        """Record a record the server already holds as in sync, without a write."""
        base = self._base_of(d, sent)
        self._synced(d, ctx, db, server_id=server_id, version=version, content=d.hash, base=base)
        ctx.count("unchanged")

    def _record(
        self,
        entries: list[Entry],
        results: list[Any],
        ctx: RunContext,
        *,
        existing_pass: bool,
    ) -> None:
        if len(results) != len(entries):
            # A transaction answer that does not account for every entry confirms nothing
            # we can rely on; the next run's conditional writes find what did land.
            for entry in entries:
                ctx.count("unconfirmed")
                ctx.fail(
                    f"{entry.action.desired.kind}/{entry.action.desired.key}: "
                    "the server's answer did not confirm this record"
                )
            return
        ids = dict(ctx.known)
        for entry, res in zip(entries, results, strict=True):
            if res.resource_id:
                ids[entry.action.desired.uuid] = (
                    f"{entry.action.desired.resource_type}/{res.resource_id}"
                )
        with self.store.transaction() as db:
            for entry, res in zip(entries, results, strict=True):
                d = entry.action.desired
                op = "created" if entry.request["method"] == "POST" else "updated"
                if op == "created" and res.status == 200:
                    op = "existing"
                    ctx.existing.append(entry.action)
                ours = op != "existing"
                self._synced(
                    d,
                    ctx,
                    db,
                    server_id=res.resource_id,
                    version=res.version_id,
                    content=d.hash if ours else None,
                    base=with_ids(entry.base, ids) if ours else None,
                )
                self.store.resolve_dead_letters(d.kind, d.key, db=db)
                if ours:
                    ctx.count("updated" if existing_pass else op)
                # a record found by its identifier is known too: references to it resolve
                # to its id, as on the server, not to a conditional reference
                if d.uuid not in ctx.known and res.resource_id:
                    ctx.known[d.uuid] = f"{d.resource_type}/{res.resource_id}"

    def _group_failed(self, entries: list[Entry], exc: FhirError, ctx: RunContext) -> None:
        """One record group was refused: find out which records truly conflict."""
        with self.store.transaction() as db:
            for entry in entries:
                action = entry.action
                d = action.desired
                if isinstance(exc, ConflictError) and entry.request["method"] == "PUT":
                    verdict, version = self._conflict_verdict(entry)
                    if verdict == "own-write":
                        self._synced(
                            d,
                            ctx,
                            db,
                            server_id=None,
                            version=version,
                            content=d.hash,
                            base=entry.base,
                        )
                        ctx.count("updated")
                        continue
                    if self._rules(d) is not None and ctx.remerge_once(action):
                        continue  # merged again after this pass, on the new version
                    if verdict == "conflict":
                        reason = "changed on the server since our last write; not overwritten"
                        self._quarantine(action, "conflict", reason, exc, ctx, db)
                        continue
                    # unchanged on the server: it only failed alongside a conflicting record
                    ctx.count("deferred")
                    continue
                self._quarantine(action, "rejected", str(exc), exc, ctx, db)

    def _conflict_verdict(self, entry: Entry) -> tuple[str, str | None]:
        """Why an If-Match update failed: our own earlier write (``own-write``), someone
        else's change (``conflict``), or nothing changed and it only failed alongside another
        record (``innocent``). Returns the verdict and the server's current version."""
        state = entry.action.state
        if state is None or not state.server_id:
            return "conflict", None
        current = self.client.read(entry.action.desired.resource_type, state.server_id)
        if content_hash(current.resource) == content_hash(entry.resource):
            return "own-write", current.version_id
        if current.version_id == state.version_id:
            return "innocent", current.version_id
        return "conflict", current.version_id

    def _reject(self, action: Action, reason: str, ctx: RunContext, db: Any) -> None:
        self._quarantine(action, "rejected", reason, None, ctx, db)

    def _quarantine(
        self,
        action: Action,
        status: str,
        reason: str,
        exc: FhirError | None,
        ctx: RunContext,
        db: Any,
        fields: Sequence[str] = (),
    ) -> None:
        """Record a refused or conflicting record and keep the server's word on it;
        ``fields`` names what both sides changed (a merge conflict)."""
        d = action.desired
        state = action.state
        self.store.record(
            kind=d.kind,
            key=d.key,
            resource_type=d.resource_type,
            server_id=None,
            version_id=None,
            content_hash=state.content_hash if state else None,
            status=status,
            run_id=ctx.result.run_id,
            db=db,
            conflict_fields=fields,
        )
        self.store.dead_letter(
            run_id=ctx.result.run_id,
            kind=d.kind,
            key=d.key,
            resource_type=d.resource_type,
            reason=reason,
            http_status=exc.status if exc else None,
            outcome=exc.outcome if exc else None,
            db=db,
        )
        ctx.count(status)
        what = f"conflict ({', '.join(fields)})" if fields else "conflict"
        ctx.fail(f"{d.kind}/{d.key}: {what if status == 'conflict' else reason}")
