"""Turning server-independent references into ones the server can resolve.

Two kinds of placeholder live in a ``Desired`` resource:

* ``{"type": "Patient", "identifier": {...}}`` — a person the EHR owns. We look it up
  (``Patient?identifier=a,b,c`` in one search per batch, cached per run) and add the
  ``reference``; an unknown person is an error for that record only. We never create one.
* ``{"reference": "urn:uuid:..."}`` — another record of ours. Inside one transaction it stays
  (the server maps it); if the record already has a server id it becomes ``Type/id``;
  otherwise a conditional reference ``Type?identifier=system|value``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alliance_fhir.adapters.record import Path, placeholder_paths
from alliance_fhir.exceptions import UnresolvedPerson
from alliance_fhir.log import register_sensitive

#: The EHR-owned resource types we resolve by identifier and never write.
PERSON_TYPES = ("Patient", "Practitioner")


@dataclass(frozen=True, order=True)
class PersonKey:
    resource_type: str
    system: str
    value: str

    @property
    def token(self) -> str:
        return f"{self.system}|{self.value}"


def _at(resource: Mapping[str, Any], path: Path) -> Any:
    node: Any = resource
    for step in path:
        node = node[step]
    return node


def person_keys(resource: dict[str, Any], paths: Sequence[Path] | None = None) -> set[PersonKey]:
    """The EHR people a resource refers to by identifier (``paths``: its
    ``placeholder_paths``, when known)."""
    keys = set()
    for path in placeholder_paths(resource) if paths is None else paths:
        ref = _at(resource, path)
        ident = ref.get("identifier")
        if ref.get("type") in PERSON_TYPES and "reference" not in ref and isinstance(ident, dict):
            keys.add(PersonKey(ref["type"], str(ident.get("system")), str(ident.get("value"))))
    return keys


class PersonResolver:
    """Resolves people by identifier with one search per batch; remembers for the run."""

    def __init__(
        self, search: Callable[[str, Mapping[str, str]], Iterable[dict[str, Any]]]
    ) -> None:
        self._search = search
        self._cache: dict[PersonKey, str | None] = {}
        self.searches = 0

    def resolve(self, keys: Iterable[PersonKey], chunk: int = 50) -> None:
        """Look up every key not yet known (``None`` is remembered for unknown people)."""
        todo = sorted(k for k in set(keys) if k not in self._cache)
        register_sensitive(*(k.value for k in todo))
        by_type: dict[str, list[PersonKey]] = {}
        for key in todo:
            by_type.setdefault(key.resource_type, []).append(key)
        for rtype, items in by_type.items():
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                for key in part:
                    self._cache[key] = None
                self.searches += 1
                params = {"identifier": ",".join(k.token for k in part), "_elements": "identifier"}
                wanted = {(k.system, k.value): k for k in part}
                for found in self._search(rtype, params):
                    for ident in found.get("identifier") or []:
                        hit = wanted.get((str(ident.get("system")), str(ident.get("value"))))
                        if hit is not None and self._cache.get(hit) is None:
                            self._cache[hit] = f"{rtype}/{found['id']}"

    def get(self, key: PersonKey) -> str | None:
        return self._cache.get(key)


def resolve_references(
    resource: dict[str, Any],
    *,
    people: PersonResolver,
    in_bundle: set[str],
    known: Mapping[str, str],
    conditional: Mapping[str, str],
    paths: Sequence[Path] | None = None,
) -> dict[str, Any]:
    """A copy of ``resource`` with every placeholder turned into a resolvable reference.

    ``known`` maps a record's urn:uuid to ``Type/id`` on the server; ``conditional`` maps it to
    ``Type?identifier=...``; ``in_bundle`` holds the uuids created by the same transaction.
    Raises UnresolvedPerson for a person the server does not have.

    Only the dicts on the way to a changed reference are new; every other part is shared
    with ``resource`` (a full deep copy per record was most of the cost of building a
    bundle). The top level is always a new dict, so setting ``id`` on it is safe; nested
    parts must not be changed in place by the caller. ``paths`` are the resource's
    ``placeholder_paths`` when known (a ``Desired`` keeps them), else found here.
    """

    def fix(ref: Mapping[str, Any]) -> str | None:
        target = str(ref.get("reference", ""))
        if target.startswith("urn:uuid:"):
            if target in known:
                return known[target]
            if target not in in_bundle and target in conditional:
                return conditional[target]
            return None
        ident = ref.get("identifier")
        if ref.get("type") in PERSON_TYPES and "reference" not in ref and isinstance(ident, dict):
            key = PersonKey(ref["type"], str(ident.get("system")), str(ident.get("value")))
            found = people.get(key)
            if found is None:
                raise UnresolvedPerson(key)
            return found
        return None

    out = dict(resource)
    fresh = {id(out)}  # the containers made here: changed in place, never the caller's
    for path in placeholder_paths(resource) if paths is None else paths:
        new = fix(_at(resource, path))
        if new is None:
            continue
        node: Any = out
        for step in path:  # copy each container on the way that is still the caller's
            child = node[step]
            if id(child) not in fresh:
                child = dict(child) if isinstance(child, dict) else list(child)
                fresh.add(id(child))
                node[step] = child
            node = child
        node["reference"] = new
    return out
