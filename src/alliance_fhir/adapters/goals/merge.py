"""The merge of our Goal/CarePlan/Observation onto the server's current version.

Clinicians edit the Goals and CarePlans we wrote inside the EHR; an update lays only the
fields we own over the server's version so their additions survive. The element-order tables
keep the merged JSON in FHIR order, so its bytes (and content hash) are stable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.goals.from_fhir import is_milestone_link
from alliance_fhir.adapters.goals.options import (
    FRAMING_PREFIX,
    GOAL_ACCEPTANCE,
    GOAL_RELATIONSHIP,
    GoalOptions,
)
from alliance_fhir.exceptions import InvalidInputError, Problem


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ORDER: dict[str, tuple[str, ...]] = {
    "Goal": _words(
        "resourceType id meta implicitRules language text contained extension "
        "modifierExtension identifier lifecycleStatus achievementStatus category priority "
        "description subject startDate startCodeableConcept target statusDate statusReason "
        "expressedBy addresses note outcomeCode outcomeReference"
    ),
    "CarePlan": _words(
        "resourceType id meta implicitRules language text contained extension "
        "modifierExtension identifier instantiatesCanonical instantiatesUri basedOn replaces "
        "partOf status intent category title description subject encounter period created "
        "author contributor careTeam addresses supportingInfo goal activity note"
    ),
    "Observation": _words(
        "resourceType id meta implicitRules language text contained extension "
        "modifierExtension identifier basedOn partOf status category code subject focus "
        "encounter effectiveDateTime effectivePeriod effectiveTiming effectiveInstant issued "
        "performer valueQuantity valueCodeableConcept valueString valueBoolean valueInteger "
        "valueRange valueRatio valueSampledData valueTime valueDateTime valuePeriod "
        "dataAbsentReason interpretation note bodySite method specimen device referenceRange "
        "hasMember derivedFrom component"
    ),
}

#: Elements whose value is ours outright (absent in ours -> removed from the server's).
OWNED: dict[str, tuple[str, ...]] = {
    "Goal": _words(
        "lifecycleStatus achievementStatus priority description subject startDate target "
        "statusDate expressedBy addresses outcomeReference"
    ),
    "CarePlan": _words("status intent title description subject period author contributor goal"),
    "Observation": _words("status category code subject focus note derivedFrom"),
}
_CHOICES: dict[str, tuple[tuple[str, ...], ...]] = {
    "Goal": (("startDate", "startCodeableConcept"),),
    "Observation": (
        tuple(k for k in _ORDER["Observation"] if k.startswith("effective")),
        tuple(k for k in _ORDER["Observation"] if k.startswith("value")),
    ),
}


def merge_onto_server(
    server_resource: Mapping[str, Any],
    ours: Mapping[str, Any],
    options: GoalOptions | None = None,
) -> dict[str, Any]:
    """The server's current ``server_resource`` with the fields we own taken from ``ours``.

    Kept from the server: ``id``, ``meta``, ``text``, every element we do not model,
    identifiers of other systems, extensions with URLs we do not own (and goal-relationship
    links other than milestones), and notes that are not ours (a server note with the same
    text and time as one of ours counts as ours). Replaced: the elements listed in ``OWNED``,
    our identifier, our extensions, our notes. The result is validated and in FHIR order;
    merging the result again with the same ``ours`` changes nothing.
    """
    opts = options or GoalOptions()
    rtype = str(ours.get("resourceType"))
    if server_resource.get("resourceType") != rtype or rtype not in OWNED:
        raise InvalidInputError(
            Problem(
                f"{rtype}/{server_resource.get('id', '?')}",
                "resourceType",
                f"cannot merge a {server_resource.get('resourceType')} with a {rtype}",
            )
        )
    merged: dict[str, Any] = dict(server_resource)
    for name in OWNED[rtype]:
        merged.pop(name, None)
        merged.pop(f"_{name}", None)
        if name in ours:
            merged[name] = ours[name]
    for group in _CHOICES.get(rtype, ()):
        if any(k in ours for k in group):
            for k in group:
                merged.pop(k, None)
                merged.pop(f"_{k}", None)
            for k in group:
                if k in ours:
                    merged[k] = ours[k]

    ours_ids = list(ours.get("identifier") or [])
    our_systems = {i.get("system") for i in ours_ids}
    foreign_ids = [
        i for i in server_resource.get("identifier") or [] if i.get("system") not in our_systems
    ]
    _set(merged, "identifier", foreign_ids + ours_ids)

    owned_urls = {
        GOAL_ACCEPTANCE,
        opts.ext("goal-proposed-by"),
        opts.ext("goal-strength"),
        opts.ext("goal-resource"),
    }
    foreign_ext = [
        e
        for e in server_resource.get("extension") or []
        if e.get("url") not in owned_urls
        and not (e.get("url") == GOAL_RELATIONSHIP and is_milestone_link(e))
    ]
    _set(merged, "extension", list(ours.get("extension") or []) + foreign_ext)

    if rtype == "Goal":
        our_notes = list(ours.get("note") or [])
        seen = {(n.get("time"), n.get("text")) for n in our_notes}
        kind_url = opts.ext("goal-note-kind")
        foreign_notes = [
            n
            for n in server_resource.get("note") or []
            if not any(e.get("url") == kind_url for e in n.get("extension") or [])
            and (n.get("time"), n.get("text")) not in seen
            and not str(n.get("text", "")).startswith(FRAMING_PREFIX)
        ]
        _set(merged, "note", our_notes + foreign_notes)

    result = _ordered(rtype, merged)
    return fhirjson.validate(result, source=f"{rtype}/{result.get('id', '?')}")


def _set(target: dict[str, Any], name: str, value: list[Any]) -> None:
    if value:
        target[name] = value
    else:
        target.pop(name, None)


def _ordered(rtype: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    order = _ORDER[rtype]
    rank = {name: i for i, name in enumerate(order)}

    def sort_key(item: tuple[int, str]) -> tuple[float, int, int]:
        index, name = item
        base = name[1:] if name.startswith("_") else name
        return (rank.get(base, len(order)), 1 if name.startswith("_") else 0, index)

    names = sorted(enumerate(resource), key=sort_key)
    return {name: resource[name] for _, name in names}
