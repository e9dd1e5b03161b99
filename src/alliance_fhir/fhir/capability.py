"""Does this server support what we need? Read its CapabilityStatement and say what is missing.

We ask before the first sync rather than discovering a missing interaction halfway through
a batch. ``missing_capabilities`` lists what is absent (empty means "go");
``Capabilities`` keeps what the write strategies depend on (transaction or batch, per type
writes, conditional create, versioning, search parameters), read once per run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from alliance_fhir.exceptions import FhirError, RetriableError
from alliance_fhir.fhir.client import FhirClient

_WRITE = frozenset({"read", "create", "update", "search-type"})
_LOOKUP = frozenset({"read", "search-type"})

#: Interactions we use per resource type.
REQUIRED_INTERACTIONS: Mapping[str, frozenset[str]] = {
    "Questionnaire": _WRITE,
    "QuestionnaireResponse": _WRITE,
    "Observation": _WRITE,
    "Goal": _WRITE,
    "CarePlan": _WRITE,
    "Flag": _WRITE,
    "Task": _WRITE,
    "CodeSystem": _WRITE,
    "Patient": _LOOKUP,
    "Practitioner": _LOOKUP,
}

#: System-level needs: each group is satisfied when the server offers any one of its members.
REQUIRED_SYSTEM_INTERACTIONS: tuple[frozenset[str], ...] = (frozenset({"transaction", "batch"}),)


def _server_rest(statement: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        r
        for r in statement.get("rest") or []
        if isinstance(r, Mapping) and r.get("mode", "server") == "server"
    ]


def _codes(items: Iterable[Any]) -> set[str]:
    return {str(i.get("code")) for i in items if isinstance(i, Mapping) and i.get("code")}


def missing_capabilities(
    statement: Mapping[str, Any],
    requirements: Mapping[str, Iterable[str]] = REQUIRED_INTERACTIONS,
    system: Iterable[Iterable[str]] = REQUIRED_SYSTEM_INTERACTIONS,
    *,
    require_conditional: bool = False,
) -> list[str]:
    """Human-readable items the server lacks; empty when it offers everything we need.

    ``require_conditional`` also asks for ``conditionalCreate``/``conditionalUpdate`` where
    create/update is required (our writes are conditional). Off by default because many
    servers support conditional writes without declaring them.
    """
    problems: list[str] = []
    if statement.get("resourceType") != "CapabilityStatement":
        return ["the server did not return a CapabilityStatement from /metadata"]
    version = str(statement.get("fhirVersion") or "")
    if not version.startswith("4.0"):
        problems.append(f"fhirVersion is {version or 'missing'}; FHIR R4 (4.0.x) is required")
    rests = _server_rest(statement)
    if not rests:
        return [*problems, "the CapabilityStatement declares no server REST interface"]

    resources: dict[str, list[Mapping[str, Any]]] = {}
    system_codes: set[str] = set()
    for rest in rests:
        system_codes |= _codes(rest.get("interaction") or [])
        for res in rest.get("resource") or []:
            if isinstance(res, Mapping) and res.get("type"):
                resources.setdefault(str(res["type"]), []).append(res)

    for resource_type, needed in requirements.items():
        declared = resources.get(resource_type)
        if not declared:
            problems.append(f"{resource_type}: not supported by the server")
            continue
        have: set[str] = set()
        for res in declared:
            have |= _codes(res.get("interaction") or [])
        wanted = set(needed)
        problems.extend(
            f"{resource_type}: interaction '{code}' missing" for code in sorted(wanted - have)
        )
        if require_conditional:
            for code, flag in (("create", "conditionalCreate"), ("update", "conditionalUpdate")):
                if code in wanted and not any(r.get(flag) is True for r in declared):
                    problems.append(f"{resource_type}: conditional {code} ({flag}) not declared")

    for group in system:
        options = sorted(set(group))
        if not system_codes & set(options):
            problems.append(f"system: none of {' / '.join(options)} supported")
    return problems


def check_server(
    client: FhirClient,
    requirements: Mapping[str, Iterable[str]] = REQUIRED_INTERACTIONS,
    system: Iterable[Iterable[str]] = REQUIRED_SYSTEM_INTERACTIONS,
    *,
    require_conditional: bool = False,
) -> list[str]:
    """Fetch /metadata through ``client`` and return what is missing (see missing_capabilities)."""
    return missing_capabilities(
        client.capabilities(), requirements, system, require_conditional=require_conditional
    )


# -- what the server allows, measured once per run ---------------------------------------

#: The statement's elements ``Capabilities`` and ``missing_capabilities`` read.
READ_ELEMENTS = (
    "fhirVersion",
    "rest.mode",
    "rest.interaction",
    "rest.operation.name",
    "rest.resource.type",
    "rest.resource.interaction",
    "rest.resource.conditionalCreate",
    "rest.resource.conditionalUpdate",
    "rest.resource.versioning",
    "rest.resource.searchParam.name",
)


def statement_to_write(client: FhirClient) -> dict[str, Any]:
    """The CapabilityStatement a sync decides how to write by: only ``READ_ELEMENTS`` when
    the server can cut it, else all of it.

    A full statement lists every search parameter, include and operation of every type
    (HAPI's: 1.5 MB, 0.25-0.4 s of the server's time on the critical path of a first sync);
    cut by ``_elements`` paths it is 0.1 MB and ~4x sooner. ``_elements`` on /metadata is
    not something every server does: an answer that lacks any part of what we read (no
    server REST interface, no system interaction, no type with interactions or search
    parameters: what a server gives when it keeps only top-level elements) or a refusal
    (4xx) is followed by the plain request, so a server is never judged on a cut it made
    differently.
    """
    statement, cut = _cut_or_whole(client, READ_ELEMENTS)
    return statement if not cut or holds_what_we_read(statement) else client.capabilities()


def _cut_or_whole(client: FhirClient, elements: Sequence[str]) -> tuple[dict[str, Any], bool]:
    """The statement asked for with ``_elements`` (True), or asked for plainly when the
    server refuses that (False). A refusal of us (401/403) or of every request (retriable)
    stays an error."""
    try:
        return client.capabilities(elements=elements), True
    except FhirError as exc:
        if isinstance(exc, RetriableError) or exc.status in (401, 403):
            raise
        return client.capabilities(), False


#: What a probe asks for: enough to tell a FHIR server answered, a few hundred bytes.
PROBE_ELEMENTS = ("fhirVersion",)


def probe(client: FhirClient) -> dict[str, Any]:
    """One small GET /metadata: is the server there and answering (a daemon asks every
    cycle, and HAPI's whole statement is 1.5 MB). A server that refuses ``_elements`` is
    asked plainly, as :func:`statement_to_write` does; credentials refused and retriable
    failures stay errors."""
    return _cut_or_whole(client, PROBE_ELEMENTS)[0]


def holds_what_we_read(statement: Mapping[str, Any]) -> bool:
    """Whether ``statement`` has every part of a statement that ``Capabilities`` reads."""
    rests = _server_rest(statement)
    resources = [
        res
        for rest in rests
        for res in rest.get("resource") or []
        if isinstance(res, Mapping) and res.get("type")
    ]
    return bool(
        statement.get("fhirVersion")
        and any(rest.get("interaction") for rest in rests)
        and any(res.get("interaction") for res in resources)
        and any(res.get("searchParam") for res in resources)
    )


WriteMode = Literal["transaction", "batch", "single"]

#: Types we write whose loss degrades a feature instead of stopping sync (issue #13 item 5):
#: Questionnaires are then referenced by canonical only, alerts are written as Task only.
OPTIONAL_WRITE_TYPES = frozenset({"CodeSystem", "Questionnaire", "Flag"})


@dataclass(frozen=True)
class TypeCapability:
    """What the statement declares for one resource type."""

    interactions: frozenset[str]
    conditional_create: bool
    conditional_update: bool
    versioning: str | None
    search_params: frozenset[str]

    @property
    def writable(self) -> bool:
        return {"create", "update"} <= self.interactions


@dataclass(frozen=True)
class Capabilities:
    """A server's CapabilityStatement reduced to what our write strategies depend on.

    ``known`` is false when no statement could be read: callers then keep today's
    behaviour (transactions of conditional creates) rather than guess.
    """

    system: frozenset[str] = frozenset()
    types: Mapping[str, TypeCapability] = field(default_factory=dict)
    known: bool = True
    #: Names of the system-level operations (``rest.operation.name``, e.g. ``export``).
    operations: frozenset[str] = frozenset()

    @classmethod
    def from_statement(cls, statement: Mapping[str, Any]) -> Capabilities:
        system: set[str] = set()
        operations: set[str] = set()
        types: dict[str, TypeCapability] = {}
        for rest in _server_rest(statement):
            system |= _codes(rest.get("interaction") or [])
            operations |= {
                str(op["name"]).lstrip("$")
                for op in rest.get("operation") or []
                if isinstance(op, Mapping) and op.get("name")
            }
            for res in rest.get("resource") or []:
                if not (isinstance(res, Mapping) and res.get("type")):
                    continue
                params = {
                    str(p.get("name"))
                    for p in res.get("searchParam") or []
                    if isinstance(p, Mapping) and p.get("name")
                }
                types[str(res["type"])] = TypeCapability(
                    interactions=frozenset(_codes(res.get("interaction") or [])),
                    conditional_create=res.get("conditionalCreate") is True,
                    conditional_update=res.get("conditionalUpdate") is True,
                    versioning=str(res["versioning"]) if res.get("versioning") else None,
                    search_params=frozenset(params),
                )
        return cls(frozenset(system), types, operations=frozenset(operations))

    @classmethod
    def unknown(cls) -> Capabilities:
        return cls(known=False)

    def operation(self, name: str) -> bool:
        """Whether the statement declares the system-level operation ``name`` (``export``).
        False when no statement was read: an operation is an option, never assumed."""
        return name.lstrip("$") in self.operations

    def of(self, resource_type: str) -> TypeCapability | None:
        return self.types.get(resource_type)

    def writable(self, resource_type: str) -> bool:
        if not self.known:
            return True
        cap = self.of(resource_type)
        return cap is not None and cap.writable

    def conditional_create(self, resource_type: str) -> bool:
        """Whether ``If-None-Exist`` may be relied on for this type."""
        if not self.known:
            return True
        cap = self.of(resource_type)
        return cap is not None and cap.conditional_create

    def versioned(self, resource_type: str) -> bool:
        """Whether answers carry versions (and If-Match is honoured) for this type."""
        if not self.known:
            return True
        cap = self.of(resource_type)
        return cap is not None and (cap.versioning or "versioned") != "no-version"

    def searchable(self, resource_type: str, param: str) -> bool:
        if not self.known:
            return True
        cap = self.of(resource_type)
        return cap is not None and param in cap.search_params

    def write_mode(self, configured: str = "auto") -> WriteMode:
        """The strongest bundle the server takes (or the configured one): transaction, then
        batch, then single requests."""
        if configured in ("transaction", "batch", "single"):
            return cast(WriteMode, configured)
        if not self.known or "transaction" in self.system:
            return "transaction"
        if "batch" in self.system:
            return "batch"
        return "single"

    def blockers(self, written: Iterable[str], looked_up: Iterable[str] = ()) -> list[str]:
        """One line per thing that makes a safe sync impossible (empty: sync may run).

        A type we must write needs create, update and search by identifier (the lookup that
        replaces a conditional create the server does not honour); optional types only
        degrade (see OPTIONAL_WRITE_TYPES); people need search.
        """
        if not self.known:
            return []
        problems: list[str] = []
        for rtype in written:
            cap = self.of(rtype)
            if rtype in OPTIONAL_WRITE_TYPES:
                continue
            if cap is None:
                problems.append(f"{rtype}: not supported by the server")
                continue
            missing = sorted({"create", "update", "search-type"} - cap.interactions)
            problems.extend(f"{rtype}: interaction '{code}' missing" for code in missing)
            if (
                not cap.conditional_create
                and "search-type" in cap.interactions
                and cap.search_params
                and "identifier" not in cap.search_params
            ):
                problems.append(
                    f"{rtype}: no conditional create and no search by identifier: "
                    "a repeated run could duplicate records"
                )
        for rtype in looked_up:
            cap = self.of(rtype)
            if cap is None or "search-type" not in cap.interactions:
                problems.append(f"{rtype}: search missing (records name people by identifier)")
        return problems
