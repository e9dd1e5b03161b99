"""What a sync run wants the server to hold, before any server id is known.

A ``Desired`` record is one FHIR resource we own, in a form that does not depend on the
server: references to other records of ours are ``urn:uuid:`` values derived from their keys,
and references to the EHR's patients and practitioners are logical (``type`` + ``identifier``).
Its hash is therefore stable across runs and servers, and an unchanged record costs nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.adapters.identity import search_token

#: Fixed namespace for the uuid5 of our records (never change: ids in bundles derive from it).
RECORD_NAMESPACE = uuid.UUID("6f1d2a4e-8c1b-5e0a-9d57-3a7f2c1b9e40")

UpdateMode = Literal["if-match", "merge"]


def record_uuid(kind: str, key: str) -> str:
    """The ``urn:uuid:`` a record is known by inside bundles, stable for its (kind, key)."""
    return f"urn:uuid:{uuid.uuid5(RECORD_NAMESPACE, f'{kind}/{key}')}"


@dataclass(frozen=True)
class Desired:
    """One resource we own.

    ``identifier`` is the ``system|value`` token of our identifier on it (or, for canonical
    resources, ``url|version`` with ``search`` naming the conditional search). ``group`` keeps
    records that reference each other in one bundle (a response and its score; a goal plan).
    ``update_mode`` ``merge`` means an update is laid over the server's current version so
    fields and extensions the EHR added survive (goals); ``if-match`` replaces the resource
    only if nobody changed it since we last wrote it (assessments). ``uuid`` is the
    ``urn:uuid:`` other records use to point at this one (default: from kind and key).
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
    ) -> Desired:
        """A record found on the server by our identifier ``{namespace}/{kind}|{key}``."""
        return cls(
            kind=kind,
            key=key,
            resource=resource,
            search=f"identifier={search_token(kind, key, namespace)}",
            group=group,
        )

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])
