"""The records of a clinic as plain JSON lines, for the peers and the ceiling.

``export`` (which imports alliance-fhir) writes, once per clinic, every resource a sync would
write, in sync order, as the mapping produced it: references to our own records are
``urn:uuid:`` values, people are logical references (``type`` + ``identifier``). The peer
and ceiling processes read that file with the standard library only, so none of our code or
memory is inside their measurement. Helpers here resolve references the way a hand-written
client would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERSON_TYPES = ("Patient", "Practitioner")


@dataclass(frozen=True)
class Record:
    kind: str
    key: str
    uuid: str
    group: str
    search: str
    resource: dict[str, Any]

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])


def write_records(records: Iterable[Record], path: Path) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(
                json.dumps(
                    {
                        "kind": r.kind,
                        "key": r.key,
                        "uuid": r.uuid,
                        "group": r.group,
                        "search": r.search,
                        "resource": r.resource,
                    },
                    ensure_ascii=False,
                    separators=(",", ":"),
                )
                + "\n"
            )
            n += 1
    return n


def read_records(path: Path) -> list[Record]:
    out: list[Record] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            out.append(
                Record(d["kind"], d["key"], d["uuid"], d["group"], d["search"], d["resource"])
            )
    return out


def groups_of(records: Iterable[Record]) -> list[list[Record]]:
    """Record groups (a response with its score; a goal plan) in first-seen order."""
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.group, []).append(r)
    return list(groups.values())


def walk_refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every Reference-like dict: a person by identifier, or a ``urn:uuid:`` reference."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if (isinstance(ref, str) and ref.startswith("urn:uuid:")) or (
            node.get("type") in PERSON_TYPES
            and isinstance(node.get("identifier"), dict)
            and "reference" not in node
        ):
            yield node
        for value in node.values():
            yield from walk_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk_refs(value)


def person_tokens(records: Iterable[Record]) -> set[tuple[str, str]]:
    """(resource type, ``system|value``) of every person the records name."""
    out: set[tuple[str, str]] = set()
    for r in records:
        for ref in walk_refs(r.resource):
            if "reference" not in ref:
                ident = ref["identifier"]
                out.add((str(ref["type"]), f"{ident['system']}|{ident['value']}"))
    return out


def resolve(
    resource: dict[str, Any],
    people: dict[tuple[str, str], str],
    ours: Callable[[str], str | None],
) -> dict[str, Any]:
    """A copy with people as ``Type/id`` and each ``urn:uuid:`` replaced by ``ours(uuid)``
    (left alone when that gives None: a reference inside the same transaction)."""
    out: dict[str, Any] = json.loads(json.dumps(resource))
    for ref in walk_refs(out):
        target = ref.get("reference")
        if isinstance(target, str):
            found = ours(target)
            if found is not None:
                ref["reference"] = found
            continue
        ident = ref["identifier"]
        ref["reference"] = people[(str(ref["type"]), f"{ident['system']}|{ident['value']}")]
    return out


def creation_order(group: list[Record]) -> list[Record]:
    """The group ordered so a record comes after the records it references, as a
    one-request-per-resource client must create them to use the server's ids. A reference
    cycle (a Goal's ``outcomeReference`` to the GAS Observation whose ``focus`` is the Goal)
    is broken at the back edge: that record is created without the link and updated after
    (see ``prune_unresolved``)."""
    by_uuid = {r.uuid: r for r in group}
    done: set[str] = set()
    out: list[Record] = []

    def visit(r: Record, stack: set[str]) -> None:
        if r.uuid in done or r.uuid in stack:
            return
        stack.add(r.uuid)
        for ref in walk_refs(r.resource):
            target = ref.get("reference")
            if isinstance(target, str) and target in by_uuid:
                visit(by_uuid[target], stack)
        stack.discard(r.uuid)
        done.add(r.uuid)
        out.append(r)

    for r in group:
        visit(r, set())
    return out


def prune_unresolved(resource: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``resource`` without the list elements that still hold a ``urn:uuid:`` reference
    (the smallest enclosing list element: a Reference in ``outcomeReference``, an extension
    with a ``valueReference``); True when anything was dropped."""
    dropped = False

    def prune(node: Any) -> tuple[Any, bool]:
        nonlocal dropped
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref.startswith("urn:uuid:"):
                return node, True
            out: dict[str, Any] = {}
            bad = False
            for key, value in node.items():
                new, flag = prune(value)
                bad = bad or flag
                if isinstance(new, list) and not new and value:
                    continue  # FHIR has no empty arrays
                out[key] = new
            return out, bad
        if isinstance(node, list):
            kept = []
            for item in node:
                new, flag = prune(item)
                if flag:
                    dropped = True
                    continue
                kept.append(new)
            return kept, False
        return node, False

    pruned, bad = prune(resource)
    if bad:
        raise ValueError("an unresolved reference outside any list cannot be dropped")
    return pruned, dropped


def chunk_groups(groups: list[list[Record]], bundle_size: int) -> list[list[Record]]:
    """Bundles of whole groups, at most ``bundle_size`` entries (as the sync engine does)."""
    bundles: list[list[Record]] = []
    current: list[Record] = []
    for group in groups:
        if current and len(current) + len(group) > bundle_size:
            bundles.append(current)
            current = []
        current.extend(group)
    if current:
        bundles.append(current)
    return bundles
