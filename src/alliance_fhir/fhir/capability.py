"""Does this server support what we need? Read its CapabilityStatement and say what is missing.

We ask before the first sync rather than discovering a missing interaction halfway through
a batch. The answer is a list of human-readable items; empty means "go".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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
