"""Small result types: what a read or a write told us, without httpx types leaking out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_LOCATION = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?:/_history/(?P<vid>[A-Za-z0-9\-.]{1,64}))?/?$"
)
_ETAG = re.compile(r'^\s*(?:W/)?"(?P<vid>[^"]*)"\s*$')


def version_from_etag(etag: str | None) -> str | None:
    """``W/"3"`` -> ``"3"``; None when absent or malformed."""
    if not etag:
        return None
    match = _ETAG.match(etag)
    return match.group("vid") if match else None


def etag_for(version: str) -> str:
    """An If-Match value from a bare version id (``3`` -> ``W/"3"``); ETags pass through."""
    version = version.strip()
    if version.startswith(('W/"', '"')):
        return version
    return f'W/"{version}"'


def parse_location(location: str | None) -> tuple[str | None, str | None, str | None]:
    """(type, id, version) from a Location like ``[base]/Goal/12/_history/3``."""
    if not location:
        return None, None, None
    path = location.split("?", 1)[0].split("#", 1)[0]
    match = _LOCATION.search(path)
    if not match:
        return None, None, None
    return match.group("type"), match.group("id"), match.group("vid")


@dataclass(frozen=True)
class FhirResponse:
    """A successful response to ``FhirClient.request``: status, headers, parsed JSON body."""

    status: int
    headers: Mapping[str, str]
    body: dict[str, Any] | None


@dataclass(frozen=True)
class ReadResult:
    """A resource as read, with the version to send back in If-Match."""

    resource: dict[str, Any]
    version_id: str | None
    etag: str | None
    last_modified: str | None

    @classmethod
    def from_response(cls, response: FhirResponse) -> ReadResult:
        resource = response.body or {}
        etag = response.headers.get("etag")
        meta = resource.get("meta") or {}
        version = version_from_etag(etag) or meta.get("versionId")
        return cls(
            resource=resource,
            version_id=version,
            etag=etag or (etag_for(version) if version else None),
            last_modified=meta.get("lastUpdated") or response.headers.get("last-modified"),
        )


@dataclass(frozen=True)
class WriteResult:
    """What a create/update/delete (or one transaction entry) did.

    ``status`` 201 means created; 200 on a conditional create means it already existed.
    ``resource`` is set when the server returned a representation, ``outcome`` when it sent
    an OperationOutcome instead.
    """

    status: int
    location: str | None
    resource_id: str | None
    version_id: str | None
    etag: str | None
    resource: dict[str, Any] | None
    outcome: dict[str, Any] | None

    @property
    def created(self) -> bool:
        return self.status == 201

    @classmethod
    def _build(
        cls,
        status: int,
        location: str | None,
        etag: str | None,
        body: dict[str, Any] | None,
        outcome: dict[str, Any] | None = None,
    ) -> WriteResult:
        resource: dict[str, Any] | None = None
        if body is not None:
            if body.get("resourceType") == "OperationOutcome":
                outcome = body
            else:
                resource = body
        _, loc_id, loc_vid = parse_location(location)
        meta = (resource or {}).get("meta") or {}
        return cls(
            status=status,
            location=location,
            resource_id=loc_id or (resource or {}).get("id"),
            version_id=version_from_etag(etag) or loc_vid or meta.get("versionId"),
            etag=etag,
            resource=resource,
            outcome=outcome,
        )

    @classmethod
    def from_response(cls, response: FhirResponse) -> WriteResult:
        location = response.headers.get("location") or response.headers.get("content-location")
        return cls._build(response.status, location, response.headers.get("etag"), response.body)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> WriteResult:
        """One entry of a transaction/batch response Bundle (``response.status`` "201 Created")."""
        info = entry.get("response") or {}
        try:
            status = int(str(info.get("status", "0")).split(" ", 1)[0])
        except ValueError:
            status = 0
        resource = entry.get("resource")
        outcome = info.get("outcome")
        return cls._build(
            status,
            info.get("location"),
            info.get("etag"),
            resource if isinstance(resource, dict) else None,
            outcome if isinstance(outcome, dict) else None,
        )


def entry_results(bundle: Mapping[str, Any]) -> list[WriteResult]:
    """Per-entry results of a transaction/batch response, in request order."""
    return [WriteResult.from_entry(e) for e in bundle.get("entry") or [] if isinstance(e, dict)]
