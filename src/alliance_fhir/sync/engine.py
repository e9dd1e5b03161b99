"""Apply a plan: bundle the writes, send them, and record what the server now holds.

Safety rules, in the order they matter:

* every create is conditional (``ifNoneExist`` on our identifier) and every update carries
  ``If-Match`` (on a server without versions: read and compared with what we last wrote,
  ``sync.unversioned``): a retried or repeated request never duplicates and never
  overwrites blindly;
* a record others may edit (a ``merge`` record: Goal, CarePlan) is merged three ways with
  its base, what we last wrote (``sync.merge3``): the EHR's changes are kept, a field both
  sides changed is a conflict settled by the policy, If-Match carries the version the merge
  was computed on and a 412 is merged again once; a merge that changes nothing is not sent;
* the state store is written only from what the server answered, in one SQLite transaction
  per bundle, so a crash at any point leaves a state that the next run repairs (a create
  that already landed is found by its identifier; an update that landed is recognised as our
  own write, not reported as a conflict);
* a bundle the server refuses is split into its record groups and retried group by group,
  so one bad record never holds back the others; what still fails is quarantined in the
  dead-letter table with the server's OperationOutcome.

How the writes travel (transaction, batch or single requests; identifier lookups where the
server ignores If-None-Exist) is chosen from the server's capabilities by ``WritePolicy``
and carried out in ``sync.strategies``; the engine plans, dispatches and records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.adapters.record import Desired
from alliance_fhir.exceptions import (
    ConflictError,
    FatalError,
    FhirError,
    RetriableError,
    ServerRejectedError,
    UnresolvedPerson,
)
from alliance_fhir.fhir import (
    EncodedJson,
    WriteResult,
    bundle_is_idempotent,
    entry_results,
    etag_for,
)
from alliance_fhir.log import get_logger, new_id
from alliance_fhir.sync.merge3 import MergeRules, policy_of
from alliance_fhir.sync.merged import adopted_note, read_and_merge
from alliance_fhir.sync.pipeline import SendPipeline
from alliance_fhir.sync.plan import Action, SyncPlan, make_plan
from alliance_fhir.sync.read_ahead import read_ahead
from alliance_fhir.sync.recording import StateRecording
from alliance_fhir.sync.references import PersonResolver, person_keys
from alliance_fhir.sync.references import resolve_references as _resolve
from alliance_fhir.sync.run import (
    LastWindow,
    Progress,
    RunContext,
    SyncClient,
    SyncResult,
    Unchanged,
)
from alliance_fhir.sync.state import RecordState, StateStore
from alliance_fhir.sync.strategies import (
    Entry,
    StepClient,
    WritePolicy,
    drop_existing,
    needs_create,
    send_stepwise,
    split_unaccepted,
    verify_once,
    verify_sample,
)
from alliance_fhir.sync.unversioned import Verdict, unversioned_verdict

__all__ = [
    "LastWindow",
    "MergeRules",
    "Progress",
    "SyncClient",
    "SyncEngine",
    "SyncResult",
    "Unchanged",
]

log = get_logger("alliance_fhir.sync")


_Entry = Entry


@dataclass(frozen=True)
class _Ready:
    """A bundle built ahead (``SyncEngine._ahead``): its groups, entries and encoded Bundle."""

    groups: list[list[Action]]
    made: tuple[list[Entry], dict[str, Any]] | None


#: A run's last window (``LastWindow``) goes in up to this many bundles per connection, so
#: that the connections finish together, but none smaller than ``LAST_MIN_ENTRIES``: a small
#: last window stays one bundle (one request for a daemon cycle's few records).
LAST_BUNDLES_PER_CONNECTION = 2
LAST_MIN_ENTRIES = 25


class SyncEngine(StateRecording):
    """Plans and applies one run of desired records against one server and state store."""

    def __init__(
        self,
        client: SyncClient,
        store: StateStore,
        *,
        bundle_size: int = 100,
        concurrency: int = 2,
        conflict_policy: str = "skip",
        mergers: Mapping[str, MergeRules] | None = None,
        progress: Progress | None = None,
        policy: WritePolicy | Callable[[], WritePolicy] | None = None,
    ) -> None:
        self.client = client
        # A callable is asked only when a run has something to write: an idle re-sync
        # costs no CapabilityStatement request.
        self._policy = policy if isinstance(policy, WritePolicy | None) else None
        self._policy_source = None if isinstance(policy, WritePolicy | None) else policy
        self.store = store
        self.bundle_size = bundle_size
        self.concurrency = concurrency
        self.conflict_policy = policy_of(conflict_policy)
        self.overwrite = self.conflict_policy == "ours-wins"
        self.mergers = dict(mergers or {})
        self.progress = progress
        #: Resource types whose creates were checked on the server this run (verify_sample).
        self._verified: set[str] = set()

    @property
    def policy(self) -> WritePolicy:
        """How this run writes (transaction, batch or single; lookups; types left out)."""
        if self._policy is None:
            self._policy = self._policy_source() if self._policy_source else WritePolicy()
        return self._policy

    def plan(self, desired: Sequence[Desired]) -> SyncPlan:
        return make_plan(
            desired,
            self.store.record_states(),
            overwrite_conflicts=self.overwrite,
            retry_conflict=self._retry_conflict,
        )

    def _retry_conflict(self, record: Desired) -> bool:
        """Under ``ehr-wins`` a merged record in conflict is merged again (the EHR's values
        win); under ``skip`` it waits for a human; ``ours-wins`` retries everything."""
        return self.conflict_policy == "ehr-wins" and self._rules(record) is not None

    def run(self, desired: Sequence[Desired], *, command: str = "sync") -> SyncResult:
        """One run over records held in memory (one window, the last)."""
        return self.run_windows([LastWindow(desired)], command=command)

    def run_windows(
        self, windows: Iterable[Sequence[Desired] | Unchanged], *, command: str = "sync"
    ) -> SyncResult:
        """One run over records that arrive in windows (a file or a few at a time), so a
        100k-assessment import never holds more than a window of resources. A window must
        keep each record group whole; a record key may appear once per run. An
        ``Unchanged`` window only counts its records (their source files were skipped); a
        ``LastWindow`` is sent in finer bundles."""
        started = time.monotonic()
        result = SyncResult(run_id=new_id())
        self.store.start_run(result.run_id, command)
        outcome = "failed"
        seen: set[tuple[str, str]] = set()
        people = PersonResolver(self.client.search)
        # the next window is read and mapped while this one is sent
        ahead = read_ahead(windows)
        pipeline = SendPipeline(self.concurrency)
        self._verified = set()
        try:
            self._check_state_matches_server()
            for window in ahead:
                self._run_window(window, result, seen, people, pipeline)
            pipeline.drain()
            if result.bases_adopted:  # said once per run
                log.info("sync.base_adopted", run_id=result.run_id, records=result.bases_adopted)
                result.notes.append(adopted_note(result.bases_adopted))
            outcome = "ok" if result.ok else "partial"
        finally:
            pipeline.close()  # a failed run sends nothing more; what is in flight lands
            ahead.close()  # a run that failed stops reading ahead before it is recorded
            result.seconds = time.monotonic() - started
            self.store.finish_run(result.run_id, outcome, dict(result.counts))
            log.info(
                "sync.done",
                run_id=result.run_id,
                outcome=outcome,
                bundles=result.bundles,
                files_skipped=result.files_skipped,
                seconds=round(result.seconds, 3),
                **result.summary(),
            )
        return result

    def _run_window(
        self,
        window: Sequence[Desired] | Unchanged,
        result: SyncResult,
        seen: set[tuple[str, str]],
        people: PersonResolver,
        pipeline: SendPipeline,
    ) -> None:
        """Plan one window against the state store and queue what it writes."""
        if isinstance(window, Unchanged):
            if window.records:
                result.counts["unchanged"] += window.records
            result.files_skipped += window.files
            return
        self._check_unique(window, seen)
        plan = make_plan(
            window,
            self.store.states_of((record.kind, record.key) for record in window),
            overwrite_conflicts=self.overwrite,
            retry_conflict=self._retry_conflict,
        )
        for action in plan.actions:
            if action.op in ("unchanged", "conflict"):
                result.counts[action.op] += 1
        log.debug("sync.window", run_id=result.run_id, **plan.counts())
        if self.progress is not None and plan.writes:
            self.progress.start(len(plan.writes))
        self._apply(plan, result, people, pipeline, last=isinstance(window, LastWindow))

    def _check_state_matches_server(self) -> None:
        """One read of our latest record: if the server no longer has it (a reset test
        server, a restored backup), the state describes another server's content. Forget it;
        conditional creates then find or recreate each record without duplicates."""
        sample = self.store.latest_synced()
        if sample is None or sample.server_id is None:
            return
        try:
            self.client.read(sample.resource_type, sample.server_id)
        except FatalError as exc:
            if exc.status not in (404, 410):
                raise
            dropped = self.store.forget_all()
            log.warning("sync.state_stale", records_forgotten=dropped)

    @staticmethod
    def _check_unique(desired: Sequence[Desired], seen: set[tuple[str, str]]) -> None:
        for record in desired:
            ident = (record.kind, record.key)
            if ident in seen:
                raise ValueError(f"duplicate record {record.kind}/{record.key} in one run")
            seen.add(ident)

    # Applying

    def _apply(
        self,
        plan: SyncPlan,
        result: SyncResult,
        people: PersonResolver,
        pipeline: SendPipeline,
        *,
        last: bool = False,
    ) -> None:
        if not plan.writes:
            return
        writes, unaccepted = split_unaccepted(plan.writes, self.policy.skip_types)
        for rtype, count in unaccepted.items():
            # Said once per type, not once per record: the server takes no writes of it.
            log.warning("sync.type_not_accepted", resource_type=rtype, records=count)
            result.counts["not_accepted"] += count
        if not writes:
            return
        people.resolve(
            k for a in writes for k in person_keys(a.desired.resource, a.desired.placeholders)
        )
        known = {
            a.desired.uuid: f"{a.desired.resource_type}/{a.state.server_id}"
            for a in plan.actions
            if a.state is not None and a.state.server_id
        }
        conditional = {
            a.desired.uuid: f"{a.desired.resource_type}?{a.desired.search}" for a in plan.actions
        }
        groups: dict[str, list[Action]] = {}
        for action in writes:
            groups.setdefault(action.desired.group, []).append(action)
        bundles = list(self._chunk(list(groups.values()), last=last))
        ctx = RunContext(people, known, conditional, result)
        pipeline.submit(
            lambda item: self._send_ahead(item, ctx),
            # the pipeline draws each bundle before it waits for room: the next is built
            # while the connections are busy
            (self._ahead(groups, ctx) for groups in bundles),
            lambda: self._follow_up(ctx),
            early=lambda: verify_sample(self, ctx, self._verified),
        )

    def _follow_up(self, ctx: RunContext) -> None:
        """What a window needs once all its bundles are answered (in the run's thread, so
        the senders never wait for it)."""
        verify_sample(self, ctx, self._verified)
        # Conditional creates that found an existing resource of ours (state lost, or an
        # earlier run crashed before recording): bring its content up to date now.
        if ctx.existing:
            states = self.store.record_states()
            redo = []
            for found in ctx.existing:
                state = states.get((found.desired.kind, found.desired.key))
                if state is None or not self._differs_on_server(found.desired, state, ctx):
                    continue
                redo.append(Action("update", found.desired, state))
            ctx.existing = []
            for group in self._chunk([[a] for a in redo]):
                self._send(group, ctx, existing_pass=True)
        # Merged updates refused with 412 (someone wrote between our read and our write):
        # read and merge again, once; a second 412 is a conflict.
        while ctx.remerge:
            again, ctx.remerge = ctx.remerge, []
            for group in self._chunk([[a] for a in again]):
                self._send(group, ctx, existing_pass=True)

    def _differs_on_server(self, desired: Desired, state: RecordState, ctx: RunContext) -> bool:
        """Whether a record found by its identifier holds other content than ours; if not,
        it is recorded as in sync without a write."""
        assert state.server_id is not None  # set from the conditional create's answer
        current = self.client.read(desired.resource_type, state.server_id)
        ours = _resolve(
            desired.resource,
            people=ctx.people,
            in_bundle=set(),
            known=ctx.known,
            conditional=ctx.conditional,
            paths=desired.placeholders,
        )
        if content_hash(current.resource) != content_hash(ours):
            return True
        with self.store.transaction() as db:
            self._unchanged(desired, state.server_id, current.version_id, ours, ctx, db)
        return False

    def _chunk(
        self, groups: list[list[Action]], *, last: bool = False
    ) -> Iterator[list[list[Action]]]:
        """Whole groups in bundles of at most ``bundle_size`` entries, as even as the groups
        allow: 105 entries go as 56 + 49, not 100 + 5. The bundles of a window are sent side
        by side, and the window (the run, for its last one) lasts as long as its largest
        bundle; a remainder bundle left one connection idle while the other sent the rest.
        The ``last`` window of a run goes in more, smaller bundles (105 entries: four of
        21-28), which the connections take as each comes free."""
        total = sum(len(group) for group in groups)
        count = -(-total // self.bundle_size)  # the fewest bundles that can hold them
        if last:
            finer = min(LAST_BUNDLES_PER_CONNECTION * self.concurrency, total // LAST_MIN_ENTRIES)
            count = max(count, finer)
        target = -(-total // count) if count else 0
        bundle: list[list[Action]] = []
        size = 0
        for group in groups:
            if bundle and (size >= target or size + len(group) > self.bundle_size):
                yield bundle
                bundle, size = [], 0
            bundle.append(group)
            size += len(group)
        if bundle:
            yield bundle

    # The write strategies' view of the engine (see sync.strategies.Host)

    @property
    def step_client(self) -> StepClient:
        return cast(StepClient, self.client)

    def build(self, action: Action, ctx: RunContext) -> Entry | None:
        built = self._build_group([action], set(), ctx)
        return built[0] if built else None

    def record(self, entries: list[Entry], results: list[WriteResult], ctx: RunContext) -> None:
        self._record(entries, list(results), ctx, existing_pass=False)

    def refused(self, entries: list[Entry], exc: FhirError, ctx: RunContext) -> None:
        self._group_failed(entries, exc, ctx)

    def state_of(self, desired: Desired) -> RecordState | None:
        return self.store.get(desired.kind, desired.key)

    def _send(
        self, groups: list[list[Action]], ctx: RunContext, *, existing_pass: bool = False
    ) -> None:
        """Write record groups the way the policy says (transaction, batch, single)."""
        if self.policy.lookup_types and not existing_pass:
            groups = drop_existing(self, groups, ctx)
        for mode, part in self.policy.by_mode(groups):
            if mode == "transaction":
                self._send_transaction(part, ctx, existing_pass=existing_pass)
                continue
            sent = send_stepwise(self, part, ctx, mode=mode)
            if self.progress is not None and not existing_pass and sent:
                self.progress.advance(sent)

    def _ahead(self, groups: list[list[Action]], ctx: RunContext) -> list[list[Action]] | _Ready:
        """A bundle of creates sent as a transaction is built and encoded here, in the run's
        thread, while the connections are busy with the bundles before it; a sender then only
        posts it (building and encoding a bundle of 100 took a sender 10-15 ms between two
        requests). Anything else is built by its sender: an update's build may read the
        server, and the senders read side by side."""
        policy = self.policy
        if policy.lookup_types or not all(needs_create(a) for group in groups for a in group):
            return groups
        modes = policy.by_mode(groups)
        if len(modes) != 1 or modes[0][0] != "transaction":
            return groups
        return _Ready(groups, self._transaction_of(groups, ctx, encode=True))

    def _send_ahead(self, item: list[list[Action]] | _Ready, ctx: RunContext) -> None:
        if isinstance(item, _Ready):
            self._send_transaction(item.groups, ctx, ready=item)
        else:
            self._send(item, ctx)

    def _transaction_of(
        self, groups: list[list[Action]], ctx: RunContext, *, encode: bool = False
    ) -> tuple[list[_Entry], dict[str, Any]] | None:
        """The entries of ``groups`` and their transaction Bundle (None: nothing to send)."""
        entries: list[_Entry] = []
        in_bundle = {a.desired.uuid for g in groups for a in g if a.op == "create"}
        for group in groups:
            built = self._build_group(group, in_bundle, ctx)
            if built is not None:
                entries.extend(built)
        if not entries:
            return None
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": e.action.desired.uuid, "resource": e.resource, "request": e.request}
                for e in entries
            ],
        }
        return entries, EncodedJson(bundle) if encode else bundle

    def _send_transaction(
        self,
        groups: list[list[Action]],
        ctx: RunContext,
        *,
        existing_pass: bool = False,
        ready: _Ready | None = None,
    ) -> None:
        made = ready.made if ready is not None else self._transaction_of(groups, ctx)
        if made is None:
            return
        entries, bundle = made
        try:
            ctx.count_bundle()
            response = self.client.transaction(bundle)
        except RetriableError:
            if self.policy.trusts_if_none_exist() or bundle_is_idempotent(
                bundle, if_none_exist=False
            ):
                raise
            # A lost answer on a server that ignores If-None-Exist: find what landed by
            # identifier, send the rest one by one; never replay the bundle blindly.
            send_stepwise(self, groups, ctx, mode="single", recovering=True)
            return
        except (ServerRejectedError, ConflictError) as exc:
            # only the groups that were in the bundle: one settled while it was built (an
            # unknown person, an unversioned conflict) is recorded already, not again
            sent = {id(e.action) for e in entries}
            tried = [g for g in groups if any(id(a) in sent for a in g)]
            if len(tried) > 1:
                for group in tried:
                    self._send([group], ctx, existing_pass=existing_pass)
                return
            self._group_failed(entries, exc, ctx)
            return
        results = entry_results(response)
        self._record(entries, results, ctx, existing_pass=existing_pass)
        verify_once(self, entries, results, ctx)
        if self.progress is not None and not existing_pass:
            self.progress.advance(len(entries))

    def _build_group(
        self, group: list[Action], in_bundle: set[str], ctx: RunContext
    ) -> list[_Entry] | None:
        """The entries of one group; ``in_bundle``: the uuids the bundle creates."""
        entries = []
        held = False  # a record of the group in conflict holds the rest back, as a 412 would
        try:
            for action in group:
                d = action.desired
                resource = _resolve(
                    d.resource,
                    people=ctx.people,
                    in_bundle=in_bundle,
                    known=ctx.known,
                    conditional=ctx.conditional,
                    paths=d.placeholders,
                )
                if needs_create(action):
                    request = {"method": "POST", "url": d.resource_type, "ifNoneExist": d.search}
                    entries.append(_Entry(action, resource, request, self._base_of(d, resource)))
                    continue
                state = action.state
                # not a create (needs_create): the record is on the server
                assert state is not None
                assert state.server_id
                resource["id"] = state.server_id
                if self._rules(d) is not None:
                    merged = self._merged_entry(action, resource, ctx)
                    if merged is not None:
                        entries.append(merged)
                    continue
                version = state.version_id
                if d.update_mode == "merge" or (self.overwrite and state.status == "conflict"):
                    current = self.client.read(d.resource_type, state.server_id)
                    version = current.version_id
                elif not version or d.resource_type in self.policy.unversioned_types:
                    verdict = self._settle_unversioned(action, resource, ctx)
                    held = held or verdict == "conflict"
                    if verdict != "write":
                        continue
                request = {"method": "PUT", "url": f"{d.resource_type}/{state.server_id}"}
                if version:
                    request["ifMatch"] = etag_for(version)
                entries.append(_Entry(action, resource, request))
        except UnresolvedPerson as exc:
            reason = f"unknown {exc.key.resource_type}: {exc}"
            with self.store.transaction() as db:
                for action in group:
                    self._reject(action, reason, ctx, db)
            return None
        if held:
            for _ in entries:
                ctx.count("deferred")
            return None
        return entries

    def _settle_unversioned(self, action: Action, ours: dict[str, Any], ctx: RunContext) -> Verdict:
        """An update If-Match cannot guard: read and compare with what we last wrote first
        (``sync.unversioned``); an ``unchanged`` or ``conflict`` verdict is recorded here."""
        d, state = action.desired, action.state
        assert state is not None
        assert state.server_id is not None
        last = state.content_hash
        verdict = unversioned_verdict(self.client.read, state.server_id, d.resource, ours, last)
        if verdict == "write":
            return verdict
        with self.store.transaction() as db:
            if verdict == "unchanged":
                self._unchanged(d, state.server_id, None, ours, ctx, db)
            else:
                reason = "changed on the server since our last write; not overwritten"
                self._quarantine(action, "conflict", reason, None, ctx, db)
        return verdict

    def _merged_entry(self, action: Action, ours: dict[str, Any], ctx: RunContext) -> _Entry | None:
        """The update of a merged record: read the server's version, merge three ways with
        the stored base. Nothing is sent when the merge changes nothing (``unchanged``) or
        when both sides changed a field and the policy is ``skip`` (``conflict``, with the
        field names; values never leave the server)."""
        d, state = action.desired, action.state
        rules = self._rules(d)
        assert rules is not None
        assert state is not None
        assert state.server_id is not None
        update, version = read_and_merge(
            self.client.read,
            self.store,
            d,
            state.server_id,
            ours,
            rules,
            self.conflict_policy,
            run_id=ctx.result.run_id,
        )
        if update.adopted:
            ctx.adopt()
        if update.resource is not None:
            request = {"method": "PUT", "url": f"{d.resource_type}/{state.server_id}"}
            if version:
                request["ifMatch"] = etag_for(version)
            return _Entry(action, update.resource, request, update.base)
        with self.store.transaction() as db:
            if update.unchanged:
                self._unchanged(d, state.server_id, version, ours, ctx, db)
                self.store.resolve_dead_letters(d.kind, d.key, db=db)
            else:
                names = ", ".join(update.conflicts)
                reason = f"changed on the server and by us: {names}; not overwritten"
                self._quarantine(action, "conflict", reason, None, ctx, db, update.conflicts)
        return None
