"""The merge of our Goal/CarePlan/Observation onto the server's current version.

Clinicians edit the Goals and CarePlans we wrote inside the EHR; an update lays only the
fields we own over the server's version so their additions survive. ``owned_fields``,
``set_keys`` and ``lay_fields`` give sync's three-way merge (``sync.merge3``) its view of
what we own, so a clinician's change to one of those fields is kept too. The element-order tables
keep the merged JSON in FHIR order, so its bytes (and content hash) are stable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
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


# Field views for the three-way merge (``sync.merge3``): what we own, flat, by field name.

#: Prefix of the view fields holding our extensions, one field per extension URL.
EXT_FIELD = "extension:"

#: The identity of a list item (matches ``sync.merge3.ItemKey``; adapters sit below sync).
ItemKey = Callable[[Any], str]


def _reference_key(item: Any) -> str:
    if isinstance(item, Mapping) and isinstance(item.get("reference"), str):
        return str(item["reference"])
    return _content_key(item)


def _content_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False)


def _target_key(item: Any) -> str:
    measure = item.get("measure") if isinstance(item, Mapping) else None
    return _content_key(measure if measure is not None else item)


def _acceptance_key(item: Any) -> str:
    """Agreement is one entry per person: matched by its ``individual``."""
    subs = item.get("extension") if isinstance(item, Mapping) else None
    for sub in subs or []:
        if isinstance(sub, Mapping) and sub.get("url") == "individual":
            return _reference_key(sub.get("valueReference"))
    return _content_key(item)


#: List fields merged as sets (EHR additions stay), with the identity of their items.
SET_KEYS: dict[str, dict[str, ItemKey]] = {
    "Goal": {
        "target": _target_key,
        "addresses": _reference_key,
        "outcomeReference": _reference_key,
        "note": _content_key,
        EXT_FIELD + GOAL_ACCEPTANCE: _acceptance_key,
        EXT_FIELD + GOAL_RELATIONSHIP: _content_key,
    },
    "CarePlan": {"goal": _reference_key, "contributor": _reference_key},
}


def set_keys(rtype: str, options: GoalOptions | None = None) -> dict[str, ItemKey]:
    """``SET_KEYS`` of a type plus our list-valued extensions (strengths, resources)."""
    opts = options or GoalOptions()
    found = dict(SET_KEYS.get(rtype, {}))
    if rtype == "Goal":
        for name in ("goal-strength", "goal-resource"):
            found[EXT_FIELD + opts.ext(name)] = _content_key
    return found


def _owned_names(rtype: str) -> list[str]:
    names = list(OWNED[rtype])
    for group in _CHOICES.get(rtype, ()):
        names += [k for k in group if k not in names]
    return names


def _owns_extension(ext: Mapping[str, Any], opts: GoalOptions) -> bool:
    url = ext.get("url")
    if url == GOAL_RELATIONSHIP:
        return is_milestone_link(ext)
    return url in {
        GOAL_ACCEPTANCE,
        opts.ext("goal-proposed-by"),
        opts.ext("goal-strength"),
        opts.ext("goal-resource"),
    }


def _owns_note(note: Mapping[str, Any], opts: GoalOptions) -> bool:
    kind_url = opts.ext("goal-note-kind")
    return any(e.get("url") == kind_url for e in note.get("extension") or []) or str(
        note.get("text", "")
    ).startswith(FRAMING_PREFIX)


def owned_fields(resource: Mapping[str, Any], options: GoalOptions | None = None) -> dict[str, Any]:
    """The fields of ``resource`` we own, flat: each ``OWNED`` element, each of our extension
    URLs as ``extension:<url>`` (a list), and our notes (Goal). Used the same way on our
    resource, the server's and the stored base, so the three compare field by field."""
    opts = options or GoalOptions()
    rtype = str(resource.get("resourceType"))
    if rtype not in OWNED:
        return {}
    view = {name: resource[name] for name in _owned_names(rtype) if name in resource}
    for ext in resource.get("extension") or []:
        if isinstance(ext, Mapping) and _owns_extension(ext, opts):
            view.setdefault(EXT_FIELD + str(ext["url"]), []).append(ext)
    if rtype == "Goal":
        notes = [n for n in resource.get("note") or [] if _owns_note(n, opts)]
        if notes:
            view["note"] = notes
    return view


def lay_fields(
    server_resource: Mapping[str, Any],
    ours: Mapping[str, Any],
    fields: Mapping[str, Any],
    options: GoalOptions | None = None,
) -> dict[str, Any]:
    """``merge_onto_server`` with ``fields`` (a merged ``owned_fields`` view) as the owned
    content instead of ``ours``'s; ``ours`` still gives our identifier. Our extensions keep
    the order of their URLs in ``ours``, so an unchanged record merges to the same bytes."""
    rtype = str(ours.get("resourceType"))
    laid = {k: v for k, v in ours.items() if k not in ("extension", "note")}
    for name in _owned_names(rtype) if rtype in OWNED else ():
        laid.pop(name, None)
    urls = [str(e.get("url")) for e in ours.get("extension") or []]
    urls += [n[len(EXT_FIELD) :] for n in fields if n.startswith(EXT_FIELD)]
    extensions: list[Any] = []
    for url in dict.fromkeys(urls):
        extensions += fields.get(EXT_FIELD + url, [])
    for name, value in fields.items():
        if not name.startswith(EXT_FIELD):
            laid[name] = value
    if extensions:
        laid["extension"] = extensions
    return merge_onto_server(server_resource, laid, options)
