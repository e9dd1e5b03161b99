"""What a sync run wants the server to hold, before any server id is known.

A ``Desired`` record is one FHIR resource we own, in a form that does not depend on the
server: references to other records of ours are ``urn:uuid:`` values derived from their keys,
and references to the EHR's patients and practitioners are logical (``type`` + ``identifier``).
Its hash is therefore stable across runs and servers, and an unchanged record costs nothing.

Adapters produce these records (sync only plans and writes them), so they live here, below
``sync`` in the layer order.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.adapters.identity import DEFAULT_NAMESPACE, search_token

__all__ = ["RECORD_NAMESPACE", "Desired", "Path", "UpdateMode", "placeholder_paths", "record_uuid"]

#: Fixed namespace for the uuid5 of our records (never change: ids in bundles derive from it).
RECORD_NAMESPACE = uuid.UUID("6f1d2a4e-8c1b-5e0a-9d57-3a7f2c1b9e40")

#: Goal-plan kinds (``adapters.goals`` ``KIND_*``) whose uuids came from the goals adapter's own
#: scheme before the two were folded into one. Frozen on purpose: spelled out rather than
#: imported so that a kind added to goals later gets the ordinary scheme, not this one.
_URL_SCHEME_KINDS = frozenset({"goal", "careplan", "gas-rating", "gas-summary"})

UpdateMode = Literal["if-match", "merge"]

#: Where a node sits in a resource: the keys and list positions leading to it.
Path = tuple[str | int, ...]


def record_uuid(kind: str, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The ``urn:uuid:`` a record is known by inside bundles, stable for its (kind, key).

    Every record's uuid comes from here. Most kinds use uuid5 over ``kind/key`` in
    ``RECORD_NAMESPACE`` (``namespace`` plays no part). Goal-plan kinds keep the legacy
    uuid5(NAMESPACE_URL, our identifier token) — so for them ``namespace`` matters: state
    stores hold content hashes of resources that embed these uuids (a CarePlan's goal
    references, GAS Observations' focus and derivedFrom), and a new uuid would make every
    stored plan look changed and be rewritten.
    """
    if kind in _URL_SCHEME_KINDS:
        return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, search_token(kind, key, namespace))}"
    return _record_uuid(kind, key)


# A response's uuid is asked for by its record and by its score (the namespace plays no part
# here, so it is left out of the cache key: one hit instead of two misses).
@lru_cache(maxsize=8192)
def _record_uuid(kind: str, key: str) -> str:
    return f"urn:uuid:{_uuid5(_RECORD_NAMESPACE_BYTES, f'{kind}/{key}')}"


_RECORD_NAMESPACE_BYTES = RECORD_NAMESPACE.bytes


def _uuid5(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` without building UUID objects (RFC 4122: SHA-1
    of namespace + name, version 5, variant 10xx)."""
    # SHA-1 is what RFC 4122 fixes for version 5 ids: naming, not security
    sha1 = hashlib.sha1(namespace + name.encode("utf-8"), usedforsecurity=False)
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True)
class Desired:
    """One resource we own.

    ``search`` names the conditional search that finds it on the server
    (``identifier=system|value`` of our identifier, or ``url=...&version=...`` for canonical
    resources). ``group`` keeps records that reference each other in one bundle (a response
    and its score; a goal plan). ``update_mode`` ``merge`` means an update is laid over the
    server's current version so fields and extensions the EHR added survive (goals);
    ``if-match`` replaces the resource only if nobody changed it since we last wrote it
    (assessments). ``uuid`` is the ``urn:uuid:`` other records use to point at this one
    (default: ``record_uuid`` of kind and key in the default namespace; ``identified`` uses
    the record's own namespace).
    """

    kind: str
    key: str
    resource: dict[str, Any]
    search: str
    group: str
    update_mode: UpdateMode = "if-match"
    hash: str = field(default="", compare=False)
    uuid: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", content_hash(self.resource))
        if not self.uuid:
            object.__setattr__(self, "uuid", record_uuid(self.kind, self.key))

    @classmethod
    def identified(
        cls,
        kind: str,
        key: str,
        resource: dict[str, Any],
        *,
        namespace: str,
        group: str,
        update_mode: UpdateMode = "if-match",
    ) -> Desired:
        """A record found on the server by our identifier ``{namespace}/{kind}|{key}``."""
        return cls(
            kind=kind,
            key=key,
            resource=resource,
            search=f"identifier={search_token(kind, key, namespace)}",
            group=group,
            update_mode=update_mode,
            uuid=record_uuid(kind, key, namespace=namespace),
        )

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    @cached_property
    def placeholders(self) -> tuple[Path, ...]:
        """Where the references a sync must resolve sit (:func:`placeholder_paths`): found
        once per record, then read by the people look-up and by the bundle that sends it."""
        return placeholder_paths(self.resource)


def placeholder_paths(resource: dict[str, Any]) -> tuple[Path, ...]:
    """The paths of the reference placeholders in ``resource``, in document order (a node
    before what it holds, keys in their order): a person of the EHR by ``type`` and
    ``identifier``, or another record of ours by ``urn:uuid:`` reference. Any dict with a
    ``reference`` or ``identifier`` and either a ``type`` or a ``urn:uuid:`` reference
    counts; which of them need a change is for the sync to say."""
    out: list[Path] = []
    _dict_paths(resource, (), out)
    return tuple(out)


def _dict_paths(node: dict[str, Any], path: Path, out: list[Path]) -> None:
    if ("reference" in node or "identifier" in node) and (
        "type" in node or str(node.get("reference", "")).startswith("urn:uuid:")
    ):
        out.append(path)
    for key, value in node.items():
        if isinstance(value, dict):
            _dict_paths(value, (*path, key), out)
        elif isinstance(value, list):
            _list_paths(value, (*path, key), out)


def _list_paths(items: list[Any], path: Path, out: list[Path]) -> None:
    for i, value in enumerate(items):
        if isinstance(value, dict):
            _dict_paths(value, (*path, i), out)
        elif isinstance(value, list):
            _list_paths(value, (*path, i), out)
