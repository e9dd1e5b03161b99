"""Write strategies: one plan, written the way the server can take it.

The engine plans and records; this module decides *how* a bundle's worth of record groups
reaches the server (issue #13):

* ``transaction`` — one all-or-nothing Bundle per chunk (the engine's own path);
* ``batch`` — Bundles of independent entries, sent in dependency waves;
* ``single`` — one request per record, in dependency waves (the engine's worker pool bounds
  the concurrency).

Without a transaction the server cannot map ``urn:uuid`` references, so a record is sent only
once the records it points at have server ids from earlier answers (a QuestionnaireResponse
before its score Observations, Goals before their CarePlan). A cycle (a Goal's
``outcomeReference`` and its GAS Observation's ``focus``) is broken by creating one record
without the open references and updating it with them once the others exist.

On a server that does not honour ``If-None-Exist`` (``lookup_types``) every create is
preceded by a search for our identifiers (batched, paged, ``Cache-Control: no-cache``);
what is found is recorded as existing, never created again, and a create whose answer was
lost is looked up before it is sent a second time. A server that *claims* conditional create
but made two copies anyway stops the run with ``DuplicateRecordsError``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from alliance_fhir.adapters.record import Desired
from alliance_fhir.exceptions import (
    ConflictError,
    DuplicateRecordsError,
    FatalError,
    FhirError,
    RetriableError,
    ServerRejectedError,
)
from alliance_fhir.fhir import (
    OPTIONAL_WRITE_TYPES,
    Capabilities,
    WriteMode,
    WriteResult,
    entry_results,
)
from alliance_fhir.log import get_logger
from alliance_fhir.sync.plan import Action
from alliance_fhir.sync.state import RecordState

if TYPE_CHECKING:
    from alliance_fhir.sync.run import RunContext

__all__ = [
    "WRITTEN_TYPES",
    "Entry",
    "Host",
    "StepClient",
    "WritePolicy",
    "check_duplicates",
    "drop_existing",
    "find_existing",
    "send_stepwise",
    "split_unaccepted",
    "verify_once",
    "waves",
]

log = get_logger("alliance_fhir.sync")

#: Resource types sync writes (optional ones degrade, see ``OPTIONAL_WRITE_TYPES``).
WRITTEN_TYPES = (
    "QuestionnaireResponse",
    "Observation",
    "Goal",
    "CarePlan",
    "Task",
    "CodeSystem",
    "Questionnaire",
    "Flag",
)

#: Our identifiers per lookup search (keeps the URL well under common 8 KiB limits).
LOOKUP_CHUNK = 20
NO_CACHE = {"Cache-Control": "no-cache"}


@dataclass
class Entry:
    """One write as sent: the record's action, the resolved resource and the request."""

    action: Action
    resource: dict[str, Any]
    request: dict[str, Any]
    #: The base to store once the server has this write (three-way merged records only).
    base: dict[str, Any] | None = None


@dataclass(frozen=True)
class WritePolicy:
    """How this run writes: the bundle kind, which types need identifier lookups before a
    create, which the server will not take at all, and whether to check a claimed
    conditional create once for duplicates."""

    mode: WriteMode = "transaction"
    lookup_types: frozenset[str] = frozenset()
    skip_types: frozenset[str] = frozenset()
    verify_creates: bool = False
    #: Types whose updates If-Match cannot guard (no versions): read and compared first.
    unversioned_types: frozenset[str] = frozenset()
    #: Per-type overrides of ``mode`` (``[write_modes]``: a statement wrong for one type).
    type_modes: Mapping[str, WriteMode] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_capabilities(
        cls,
        caps: Capabilities,
        *,
        write_mode: str = "auto",
        conditional_create: str = "auto",
        write_modes: Mapping[str, str] | None = None,
    ) -> WritePolicy:
        skip = frozenset(t for t in OPTIONAL_WRITE_TYPES if not caps.writable(t))
        if conditional_create == "lookup":
            lookup = frozenset(WRITTEN_TYPES)
        elif conditional_create == "trust":
            lookup = frozenset()
        else:
            lookup = frozenset(t for t in WRITTEN_TYPES if not caps.conditional_create(t))
        return cls(
            mode=caps.write_mode(write_mode),
            lookup_types=lookup - skip,
            skip_types=skip,
            verify_creates=caps.known and conditional_create != "lookup",
            unversioned_types=frozenset(t for t in WRITTEN_TYPES if not caps.versioned(t)),
            type_modes={
                t: caps.write_mode(m) for t, m in (write_modes or {}).items() if m != "auto"
            },
        )

    def trusts_if_none_exist(self) -> bool:
        return not self.lookup_types

    def mode_of(self, resource_type: str) -> WriteMode:
        """How records of this type are written (its override, else the run's mode)."""
        return self.type_modes.get(resource_type, self.mode)

    def by_mode(
        self, groups: Sequence[Sequence[Action]]
    ) -> list[tuple[WriteMode, list[list[Action]]]]:
        """``groups`` split by how each is written: a record group goes the weakest way any
        of its types needs (one Observation set to ``single`` sends its response singly
        too), so what a transaction would have kept together is never half in a bundle."""
        parts: dict[WriteMode, list[list[Action]]] = {}
        for group in groups:
            mode = max(
                (self.mode_of(a.desired.resource_type) for a in group),
                key=_MODE_STRENGTH.index,
                default=self.mode,
            )
            parts.setdefault(mode, []).append(list(group))
        return [(m, parts[m]) for m in _MODE_STRENGTH if m in parts]


#: Write modes from the strongest guarantee to the weakest.
_MODE_STRENGTH: tuple[WriteMode, ...] = ("transaction", "batch", "single")


class StepClient(Protocol):
    """The client calls a non-transaction strategy makes."""

    def batch(self, bundle: dict[str, Any]) -> dict[str, Any]: ...

    def create(
        self, resource: Mapping[str, Any], *, if_none_exist: str | None = None
    ) -> WriteResult: ...

    def update(
        self, resource: Mapping[str, Any], *, if_match: str | None = None
    ) -> WriteResult: ...

    def search(
        self,
        resource_type: str,
        params: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[dict[str, Any]]: ...


class Host(Protocol):
    """What the strategies use of the engine: building, recording and refusing entries."""

    @property
    def step_client(self) -> StepClient: ...

    @property
    def policy(self) -> WritePolicy: ...

    def build(self, action: Action, ctx: RunContext) -> Entry | None: ...

    def record(self, entries: list[Entry], results: list[WriteResult], ctx: RunContext) -> None: ...

    def refused(self, entries: list[Entry], exc: FhirError, ctx: RunContext) -> None: ...

    def state_of(self, desired: Desired) -> RecordState | None: ...


# -- identifier lookups ---------------------------------------------------------------------


#: Search parameters of a canonical resource that equal the element of the same name.
_CANONICAL = frozenset({"url", "version"})


def _tokens(resource: Mapping[str, Any]) -> set[str]:
    """``system|value`` of each identifier (QuestionnaireResponse has just one, not a list)."""
    idents = resource.get("identifier") or []
    if isinstance(idents, Mapping):
        idents = [idents]
    return {f"{i.get('system')}|{i.get('value')}" for i in idents if isinstance(i, Mapping)}


def find_existing(client: StepClient, records: Sequence[Desired]) -> dict[str, list[str]]:
    """Server ids holding each record (by ``uuid``), found by our identifier or canonical
    search; records not on the server are absent. Fresh results only (no-cache)."""
    found: dict[str, list[str]] = {}
    by_type: dict[str, list[Desired]] = {}
    for record in records:
        by_type.setdefault(record.resource_type, []).append(record)
    for rtype, items in by_type.items():
        by_token: dict[str, Desired] = {}
        canonical: list[tuple[Desired, dict[str, str]]] = []
        for record in items:
            query = dict(parse_qsl(record.search))
            token = query.get("identifier")
            if token is not None and len(query) == 1:
                by_token[token] = record
            elif _canonical(query):
                canonical.append((record, query))
            else:
                ids = [str(r["id"]) for r in client.search(rtype, query, headers=NO_CACHE)]
                if ids:
                    found[record.uuid] = ids
        if canonical:
            _find_canonical(client, rtype, canonical, found)
        tokens = sorted(by_token)
        for start in range(0, len(tokens), LOOKUP_CHUNK):
            part = tokens[start : start + LOOKUP_CHUNK]
            # only ids and identifiers are read: a server that honours _elements sends
            # those alone (one that ignores it sends whole resources, read the same way)
            params = {"identifier": ",".join(part), "_count": "50", "_elements": "identifier"}
            for resource in client.search(rtype, params, headers=NO_CACHE):
                for token in _tokens(resource) & set(part):
                    _found_at(found, by_token[token].uuid, resource)
    return found


def _canonical(query: Mapping[str, str]) -> bool:
    """A search by ``url`` (and ``version``) whose values need no escaping when OR-ed."""
    return (
        "url" in query
        and set(query) <= _CANONICAL
        and not any("," in v or "\\" in v for v in query.values())
    )


def _find_canonical(
    client: StepClient,
    rtype: str,
    records: list[tuple[Desired, dict[str, str]]],
    found: dict[str, list[str]],
) -> None:
    """Records searched by canonical ``url`` (and ``version``), LOOKUP_CHUNK at a time in
    one search whose values are OR-ed; a resource holds a record when its ``url`` and
    ``version`` are the record's exactly (a combination matching only through the OR is
    not a match). Instruments are six records: one search instead of six per run."""
    by_names: dict[tuple[str, ...], list[tuple[Desired, dict[str, str]]]] = {}
    for record, query in records:
        by_names.setdefault(tuple(sorted(query)), []).append((record, query))
    for names, group in by_names.items():
        for start in range(0, len(group), LOOKUP_CHUNK):
            part = group[start : start + LOOKUP_CHUNK]
            params = {n: ",".join(sorted({q[n] for _, q in part})) for n in names}
            # only ids, url and version are read (whole Questionnaires otherwise: ~0.1 s of
            # a server's time for the five shipped ones, while it takes the first bundles)
            params["_count"] = "50"
            params["_elements"] = ",".join(names)
            for resource in client.search(rtype, params, headers=NO_CACHE):
                for record, query in part:
                    if all(str(resource.get(n)) == query[n] for n in names):
                        _found_at(found, record.uuid, resource)


def _found_at(found: dict[str, list[str]], uuid: str, resource: Mapping[str, Any]) -> None:
    """Note that ``resource`` holds the record ``uuid`` (once, however often it is found)."""
    ids = found.setdefault(uuid, [])
    if str(resource["id"]) not in ids:
        ids.append(str(resource["id"]))


def check_duplicates(records: Sequence[Desired], found: Mapping[str, list[str]]) -> None:
    """Stop when any record is on the server more than once (see DuplicateRecordsError)."""
    copies = [
        f"{r.kind}/{r.key}: {r.resource_type}/{', '.join(found[r.uuid])}"
        for r in records
        if len(found.get(r.uuid, ())) > 1
    ]
    if copies:
        raise DuplicateRecordsError(
            "the server holds records of ours more than once (it ignores If-None-Exist?); "
            'remove the extra copies and set conditional_create = "lookup": ' + "; ".join(copies)
        )


def verify_once(
    host: Host, entries: list[Entry], results: list[WriteResult], ctx: RunContext
) -> None:
    """A server claiming conditional create is checked once per run and resource type: the
    first records a window creates (up to 20) are kept here and looked up by
    ``verify_sample`` when the window is done, off the senders' path."""
    if not host.policy.verify_creates or len(results) != len(entries):
        return
    created = [e.action.desired for e, r in zip(entries, results, strict=True) if r.created]
    if created:
        ctx.keep_sample(created, 20)


def verify_sample(host: Host, ctx: RunContext, verified: set[str]) -> None:
    """The records a window created, of types not yet checked this run, must each be on the
    server exactly once (else DuplicateRecordsError stops the run). Whether a server honours
    If-None-Exist is a property of the server and type, not of the window: checking every
    window cost two searches per 200 records for nothing."""
    sample = [d for d in ctx.sample if d.resource_type not in verified]
    if sample:
        check_duplicates(sample, find_existing(host.step_client, sample))
        verified.update(d.resource_type for d in sample)


def _found_result(server_id: str, status: int) -> WriteResult:
    return WriteResult(status, None, server_id, None, None, None, None)


def record_found(
    host: Host, actions: Sequence[Action], found: Mapping[str, list[str]], ctx: RunContext
) -> list[Action]:
    """Record the actions found on the server as existing (the engine then compares their
    content) and return the others, which still need a create."""
    hits = [a for a in actions if a.desired.uuid in found]
    if hits:
        entries = [Entry(a, {}, {"method": "POST"}) for a in hits]
        host.record(entries, [_found_result(found[a.desired.uuid][0], 200) for a in hits], ctx)
        for action in hits:
            d = action.desired
            ctx.known.setdefault(d.uuid, f"{d.resource_type}/{found[d.uuid][0]}")
    return [a for a in actions if a.desired.uuid not in found]


def needs_create(action: Action) -> bool:
    """Whether the action is written as a create (new, or never confirmed on the server)."""
    return action.op == "create" or action.state is None or not action.state.server_id


def drop_existing(host: Host, groups: list[list[Action]], ctx: RunContext) -> list[list[Action]]:
    """Before creating on a server that ignores If-None-Exist: look our records up and
    record those already there; the groups keep only what must still be written."""
    candidates = [
        a
        for g in groups
        for a in g
        if needs_create(a) and a.desired.resource_type in host.policy.lookup_types
    ]
    if not candidates:
        return groups
    found = find_existing(host.step_client, [a.desired for a in candidates])
    check_duplicates([a.desired for a in candidates], found)
    if not found:
        return groups
    record_found(host, candidates, found, ctx)
    kept = [[a for a in g if not (needs_create(a) and a.desired.uuid in found)] for g in groups]
    return [g for g in kept if g]


# -- dependency waves -----------------------------------------------------------------------


def _uuid_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref.startswith("urn:uuid:"):
            yield ref
        for value in node.values():
            yield from _uuid_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _uuid_refs(value)


def _without_refs(node: Any, open_refs: set[str]) -> Any:
    """A copy without the list items that point at ``open_refs`` (to break a cycle); a list
    left empty goes too (FHIR allows no empty arrays)."""
    if isinstance(node, dict):
        out = {k: _without_refs(v, open_refs) for k, v in node.items()}
        return {k: v for k, v in out.items() if v != [] or node[k] == []}
    if isinstance(node, list):
        return [_without_refs(v, open_refs) for v in node if not (set(_uuid_refs(v)) & open_refs)]
    return copy.copy(node)


def waves(
    actions: Sequence[Action], known: Mapping[str, str]
) -> Iterator[tuple[list[Action], list[Action]]]:
    """Yield (ready, deferred) steps: ``ready`` refer only to records with server ids in
    ``known`` (which the caller updates between steps). When nothing is ready, the first
    pending record is yielded stripped of its open references and returned in ``deferred``
    for an update once the rest exist. A record whose target failed is sent anyway (its
    reference stays conditional; the server judges it)."""
    pending = list(actions)
    sent: set[str] = set()
    while pending:
        open_uuids = {a.desired.uuid for a in pending} - sent - set(known)
        ready = [
            a
            for a in pending
            if not ((set(_uuid_refs(a.desired.resource)) - {a.desired.uuid}) & open_uuids)
        ]
        deferred: list[Action] = []
        if not ready:
            first = pending[0]
            stripped = _without_refs(first.desired.resource, open_uuids - {first.desired.uuid})
            ready = [dataclasses.replace(first, desired=_replace_resource(first.desired, stripped))]
            log.debug("sync.cycle_broken", resource_type=first.desired.resource_type)
            deferred = [first]
        yield ready, deferred
        done = {a.desired.uuid for a in ready}
        sent |= done
        pending = [a for a in pending if a.desired.uuid not in done]


def _replace_resource(desired: Desired, resource: dict[str, Any]) -> Desired:
    return dataclasses.replace(desired, resource=resource, hash="")


# -- sending --------------------------------------------------------------------------------


def send_stepwise(
    host: Host,
    groups: Sequence[Sequence[Action]],
    ctx: RunContext,
    *,
    mode: WriteMode,
    recovering: bool = False,
) -> int:
    """Write ``groups`` without a transaction, in dependency waves; returns entries sent.
    ``recovering``: an earlier answer for these records was lost, so each create is looked
    up by identifier before it is sent."""
    actions = [a for g in groups for a in g]
    fixups: list[Action] = []
    sent = 0
    for ready, deferred in waves(actions, ctx.known):
        entries = [e for e in (host.build(a, ctx) for a in ready) if e is not None]
        for entry in entries:
            if (
                entry.request["method"] == "POST"
                and entry.action.desired.resource_type in host.policy.lookup_types
            ):
                entry.request.pop("ifNoneExist", None)
        if entries:
            if mode == "batch" and not recovering:
                _send_batch(host, entries, ctx)
            else:
                for entry in entries:
                    _send_one(host, entry, ctx, recovering=recovering)
            sent += len(entries)
        fixups.extend(deferred)
    for action in fixups:
        d = action.desired
        server_ref = ctx.known.get(d.uuid)
        if server_ref is None:
            continue  # its create failed and was recorded as such
        state = host.state_of(d)
        if state is None or not state.server_id:
            continue
        update = host.build(Action("update", d, state), ctx)
        if update is not None and _send_one(host, update, ctx, fixup=True):
            # Counted when created; completing its references is not a second change.
            ctx.uncount("updated")
    return sent


def _refused(host: Host, entry: Entry, exc: FhirError, ctx: RunContext) -> None:
    host.refused([entry], exc, ctx)


def _send_batch(host: Host, entries: list[Entry], ctx: RunContext) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"fullUrl": e.action.desired.uuid, "resource": e.resource, "request": e.request}
            for e in entries
        ],
    }
    ctx.count_bundle()
    try:
        response = host.step_client.batch(bundle)
    except RetriableError:
        # The answer was lost (or the retries ran out): what landed is found by identifier;
        # the rest is sent one by one.
        for entry in entries:
            _send_one(host, entry, ctx, recovering=True)
        return
    except (ServerRejectedError, ConflictError, FatalError) as exc:
        if exc.status in (401, 403) or exc.status is None:
            raise
        # Refused whole (a validating server judges the bundle): one by one, so one bad
        # record never holds back the others.
        if len(entries) == 1:
            _refused(host, entries[0], exc, ctx)
            return
        for entry in entries:
            _send_one(host, entry, ctx)
        return
    results = entry_results(response)
    if len(results) != len(entries):
        for entry in entries:
            _send_one(host, entry, ctx, recovering=True)
        return
    for entry, result in zip(entries, results, strict=True):
        if 200 <= result.status < 300:
            host.record([entry], [result], ctx)
            continue
        message = f"{entry.request['method']} {entry.request['url']} -> {result.status}"
        error_type: type[FhirError] = (
            ConflictError if result.status in (409, 412) else ServerRejectedError
        )
        _refused(
            host, entry, error_type(message, status=result.status, outcome=result.outcome), ctx
        )


def _send_one(
    host: Host, entry: Entry, ctx: RunContext, *, recovering: bool = False, fixup: bool = False
) -> bool:
    """Send one entry and record the answer; True when the server took it."""
    client = host.step_client
    d = entry.action.desired
    request = entry.request
    lookup = d.resource_type in host.policy.lookup_types
    if not fixup:
        ctx.count_bundle()
    try:
        if request["method"] == "POST":
            if recovering:
                # Our earlier request may have landed: then it is ours, recorded as existing
                # (its content is compared after the run), never created a second time.
                found = find_existing(client, [d])
                check_duplicates([d], found)
                if found:
                    record_found(host, [entry.action], found, ctx)
                    return True
            if_none_exist = None if lookup else request.get("ifNoneExist")
            try:
                result = client.create(entry.resource, if_none_exist=if_none_exist)
            except RetriableError:
                if if_none_exist is not None:
                    raise  # already retried by the client: the server is unavailable
                # Lost answer of a plain create: did it land? Look before sending again.
                found = find_existing(client, [d])
                check_duplicates([d], found)
                if found:
                    result = _found_result(found[d.uuid][0], 201)
                else:
                    result = client.create(entry.resource)
        else:
            result = client.update(entry.resource, if_match=request.get("ifMatch"))
    except (ConflictError, ServerRejectedError) as exc:
        _refused(host, entry, exc, ctx)
        return False
    except FatalError as exc:
        if exc.status in (401, 403) or exc.status is None:
            raise
        _refused(host, entry, exc, ctx)  # e.g. 405: this type or request is not allowed
        return False
    host.record([entry], [result], ctx)
    if result.resource_id:
        ctx.known.setdefault(d.uuid, f"{d.resource_type}/{result.resource_id}")
    return True


def split_unaccepted(
    writes: Iterable[Action], skip_types: frozenset[str]
) -> tuple[list[Action], dict[str, int]]:
    """Writes the server takes, and per type how many it will not take (said once, by the
    caller, instead of one failure per record)."""
    kept: list[Action] = []
    skipped: dict[str, int] = {}
    for action in writes:
        rtype = action.desired.resource_type
        if rtype in skip_types:
            skipped[rtype] = skipped.get(rtype, 0) + 1
        else:
            kept.append(action)
    return kept, skipped
