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

import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from alliance_fhir.adapters.record import Path, placeholder_paths
from alliance_fhir.exceptions import UnresolvedPerson
from alliance_fhir.log import get_logger, register_sensitive

log = get_logger("alliance_fhir.sync")

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
    """Resolves people by identifier with one search per batch; remembers for the run.

    ``prefetch`` starts a lookup in a thread of its own: a first sync knows a window's people
    once its files are read, and looks them up while the window is mapped instead of after
    (the search was on the critical path of the run's first bundle). ``resolve`` waits for
    it, and looks up again whatever a failed prefetch left unknown, so an error is raised
    where it was before."""

    def __init__(
        self, search: Callable[[str, Mapping[str, str]], Iterable[dict[str, Any]]]
    ) -> None:
        self._search = search
        self._cache: dict[PersonKey, str | None] = {}
        self._lock = threading.Lock()  # one lookup at a time writes the cache
        self._pending: list[threading.Thread] = []
        self.searches = 0

    def prefetch(self, keys: Iterable[PersonKey]) -> None:
        """Look ``keys`` up in the background; the next ``resolve`` waits for it."""
        todo = set(keys)
        if not todo:
            return
        context = contextvars.copy_context()  # the run's log fields
        thread = threading.Thread(
            target=context.run, args=(self._prefetched, todo), name="sync-people", daemon=True
        )
        thread.start()
        self._pending.append(thread)

    def _prefetched(self, keys: set[PersonKey]) -> None:
        try:
            self._lookup(keys)
        except Exception as exc:  # resolve() looks again and raises it there
            log.debug("sync.people_prefetch_failed", error=type(exc).__name__)

    def resolve(self, keys: Iterable[PersonKey], chunk: int = 50) -> None:
        """Look up every key not yet known (``None`` is remembered for unknown people)."""
        pending, self._pending = self._pending, []
        for thread in pending:
            thread.join()
        self._lookup(set(keys), chunk)

    def _lookup(self, keys: set[PersonKey], chunk: int = 50) -> None:
        with self._lock:
            todo = sorted(k for k in keys if k not in self._cache)
            register_sensitive(*(k.value for k in todo))
            by_type: dict[str, list[PersonKey]] = {}
            for key in todo:
                by_type.setdefault(key.resource_type, []).append(key)
            for rtype, items in by_type.items():
                for start in range(0, len(items), chunk):
                    self._search_part(rtype, items[start : start + chunk])

    def _search_part(self, rtype: str, part: list[PersonKey]) -> None:
        """One search; the cache learns its answer only once all of it has arrived (a
        search that fails midway leaves its people unknown, to be looked up again)."""
        self.searches += 1
        params = {"identifier": ",".join(k.token for k in part), "_elements": "identifier"}
        wanted = {(k.system, k.value): k for k in part}
        found_ids: dict[PersonKey, str] = {}
        for found in self._search(rtype, params):
            for ident in found.get("identifier") or []:
                hit = wanted.get((str(ident.get("system")), str(ident.get("value"))))
                if hit is not None and hit not in found_ids:
                    found_ids[hit] = f"{rtype}/{found['id']}"
        for key in part:
            self._cache[key] = found_ids.get(key)

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
