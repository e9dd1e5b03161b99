"""Three-way merge of the fields we own: base (ours as last written), theirs (the server
now), ours (this run). Pure; no I/O.

Clinicians edit the Goals and CarePlans we wrote. Merging ours onto the server's current
version alone cannot tell "the EHR changed it" from "we changed it", so a clinician's edit was
reverted silently. With the base we know who changed what, field by field:

* only we changed it -> ours; only the EHR changed it -> theirs (never reverted);
* both changed it differently -> a conflict, settled by the policy: ``skip`` (nothing is
  written for the record), ``ehr-wins`` or ``ours-wins``;
* list fields named in ``sets`` merge item by item, keyed by identity (a reference, a
  target's measure): what the EHR added stays, what we removed goes.

A resource type plugs in through :class:`MergeRules`: which fields it owns (a flat view of
the resource, one value per field name) and how to lay merged fields back onto the server's
version (which keeps everything we do not own).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.jsonbytes import compact

__all__ = [
    "POLICIES",
    "MergeOutcome",
    "MergeRules",
    "Policy",
    "Update",
    "conflict_values",
    "merge3",
    "merged_update",
    "path_rules",
    "policy_of",
    "with_ids",
]

Policy = Literal["skip", "ehr-wins", "ours-wins"]
POLICIES: tuple[Policy, ...] = ("skip", "ehr-wins", "ours-wins")

#: Identity of a list item: the key under which base, theirs and ours items are matched.
ItemKey = Callable[[Any], str]


def policy_of(setting: str) -> Policy:
    """The merge policy for a ``conflict_policy`` setting (``overwrite``, the older name of
    ``ours-wins``, is still accepted so existing configuration files keep working)."""
    if setting == "overwrite":
        return "ours-wins"
    for policy in POLICIES:
        if setting == policy:
            return policy
    raise ValueError(f"unknown conflict policy {setting!r}")


def canonical(value: Any) -> str:
    """A value's JSON with sorted keys: equal content, equal text."""
    return compact(value, sort_keys=True).decode("utf-8")


@dataclass(frozen=True)
class MergeRules:
    """How one kind of record is merged.

    ``owned(resource)`` is the flat view of the fields we own (absent fields are left out);
    ``lay(server, ours, fields)`` is the server's resource with ``fields`` (a merged view)
    as its owned fields and everything else kept; ``sets`` names the list fields merged as
    sets, with the identity of their items.
    """

    owned: Callable[[Mapping[str, Any]], dict[str, Any]]
    lay: Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
    sets: Mapping[str, ItemKey] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeOutcome:
    """The merged view and the fields both sides changed differently (names only: values
    may be patient data). Under ``skip`` a conflicting field holds the server's value."""

    fields: dict[str, Any]
    conflicts: tuple[str, ...]


_ABSENT = object()


def merge3(
    base: Mapping[str, Any],
    theirs: Mapping[str, Any],
    ours: Mapping[str, Any],
    *,
    policy: Policy,
    sets: Mapping[str, ItemKey] | None = None,
) -> MergeOutcome:
    """Merge three owned-field views; see the module docstring for the rules."""
    set_keys = sets or {}
    merged: dict[str, Any] = {}
    conflicts: list[str] = []
    names = list(ours) + [n for n in theirs if n not in ours]
    names += [n for n in base if n not in ours and n not in theirs]
    for name in names:
        b, t, o = (view.get(name, _ABSENT) for view in (base, theirs, ours))
        if name in set_keys:
            value, clash = _merge_list(b, t, o, set_keys[name], policy)
        else:
            value, clash = _merge_value(b, t, o, policy)
        if clash:
            conflicts.append(name)
        if value is not _ABSENT:
            merged[name] = value
    return MergeOutcome(merged, tuple(conflicts))


def _same(a: Any, b: Any) -> bool:
    if a is _ABSENT or b is _ABSENT:
        return a is b
    return canonical(a) == canonical(b)


def _merge_value(b: Any, t: Any, o: Any, policy: Policy) -> tuple[Any, bool]:
    """One value: (merged, whether both sides changed it differently)."""
    if _same(o, b) or _same(t, o):
        return t, False
    if _same(t, b):
        return o, False
    return (o if policy == "ours-wins" else t), True


def _merge_list(b: Any, t: Any, o: Any, key: ItemKey, policy: Policy) -> tuple[Any, bool]:
    """A list as a set of items by identity; order: ours, then the EHR's additions."""
    base, theirs, ours = (_items(v, key) for v in (b, t, o))
    result: list[Any] = []
    clash = False
    for k in list(ours) + [k for k in theirs if k not in ours]:
        value, item_clash = _merge_value(
            base.get(k, _ABSENT), theirs.get(k, _ABSENT), ours.get(k, _ABSENT), policy
        )
        clash = clash or item_clash
        if value is not _ABSENT:
            result.append(value)
    return (result if result else _ABSENT), clash  # FHIR has no empty lists


def _items(value: Any, key: ItemKey) -> dict[str, Any]:
    if value is _ABSENT or value is None:
        return {}
    items = value if isinstance(value, list) else [value]
    found: dict[str, Any] = {}
    for item in items:
        found.setdefault(key(item), item)
    return found


def with_ids(node: Any, ids: Mapping[str, str]) -> Any:
    """``node`` with ``urn:uuid`` references of a transaction replaced by what the server
    made of them (``Goal/12``): a base must compare with the server's content, not with the
    bundle we sent."""
    if isinstance(node, dict):
        out = {k: with_ids(v, ids) for k, v in node.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(node, list):
        return [with_ids(v, ids) for v in node]
    return node


@dataclass(frozen=True)
class Update:
    """What to do with one planned update of a merged record.

    ``resource`` is what to PUT (None: nothing is written: a conflict under ``skip``, or
    ``unchanged``); ``unchanged`` means the merged result is what the server already holds
    (meta aside); ``base`` is what to store as the next base once the server has it: our
    owned fields as we wanted them this run (never the EHR's values: they stay theirs);
    ``adopted`` says there was no base and the server's content stood in for it;
    ``values`` holds each conflicting field's ``ours``/``ehr``/``base`` value (patient data:
    for ``status --show-values`` only, never for a log line).
    """

    resource: dict[str, Any] | None
    base: dict[str, Any]
    conflicts: tuple[str, ...]
    unchanged: bool
    adopted: bool
    values: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def merged_update(
    base: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    ours: Mapping[str, Any],
    rules: MergeRules,
    policy: Policy,
) -> Update:
    """The three-way merge of ``ours`` with the server's ``current`` version over ``base``
    (None for state written before bases were kept: the server's content is the base, so
    every difference counts as ours, as the two-way merge did)."""
    theirs_view = rules.owned(current)
    ours_view = rules.owned(ours)
    adopted = base is None
    outcome = merge3(
        theirs_view if base is None else base,
        theirs_view,
        ours_view,
        policy=policy,
        sets=rules.sets,
    )
    if outcome.conflicts and policy == "skip":
        values = conflict_values(
            theirs_view if base is None else base, theirs_view, ours_view, outcome.conflicts
        )
        return Update(None, ours_view, outcome.conflicts, False, adopted, values)
    merged = rules.lay(current, ours, outcome.fields)
    if content_hash(merged) == content_hash(dict(current)):
        return Update(None, ours_view, outcome.conflicts, True, adopted)
    return Update(merged, ours_view, outcome.conflicts, False, adopted)


def path_rules(paths: tuple[str, ...], sets: Mapping[str, ItemKey] | None = None) -> MergeRules:
    """Rules for a resource whose owned fields are named by paths: ``status`` (an element)
    or ``code.text`` (one element of an object element, so an EHR's codings beside our text
    are not ours). The view's field names are the paths; laying removes an owned path the
    merge left absent and keeps everything else of the server's version."""

    def owned(resource: Mapping[str, Any]) -> dict[str, Any]:
        view: dict[str, Any] = {}
        for path in paths:
            value = _at(resource, path)
            if value is not _ABSENT:
                view[path] = value
        return view

    def lay(
        server: Mapping[str, Any], ours: Mapping[str, Any], fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        out = json.loads(canonical(server))
        out = {k: out[k] for k in server}  # the server's element order
        for path in paths:
            head, _, leaf = path.partition(".")
            if not leaf:
                if path in fields:
                    out[head] = fields[path]
                else:
                    out.pop(head, None)
                continue
            parent = dict(out.get(head) or {})
            if path in fields:
                parent[leaf] = fields[path]
            else:
                parent.pop(leaf, None)
            if parent:
                out[head] = parent
            else:
                out.pop(head, None)
        return out

    return MergeRules(owned=owned, lay=lay, sets=dict(sets or {}))


def _at(resource: Mapping[str, Any], path: str) -> Any:
    head, _, leaf = path.partition(".")
    value = resource.get(head, _ABSENT)
    if not leaf or value is _ABSENT:
        return value
    return value.get(leaf, _ABSENT) if isinstance(value, Mapping) else _ABSENT


def conflict_values(
    base: Mapping[str, Any],
    theirs: Mapping[str, Any],
    ours: Mapping[str, Any],
    names: tuple[str, ...],
) -> dict[str, dict[str, Any]]:
    """Each conflicting field's three values (None where a side has none)."""
    return {
        name: {"ours": ours.get(name), "ehr": theirs.get(name), "base": base.get(name)}
        for name in names
    }
