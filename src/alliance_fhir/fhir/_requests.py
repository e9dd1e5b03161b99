"""Request building, I/O-free: type and id checks, query parameters, header merging, body
checks, and which bundles may be re-sent. ``client`` uses these; nothing here sends."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from alliance_fhir.exceptions import FatalError, InvalidInputError, Problem
from alliance_fhir.fhir._results import FhirResponse
from alliance_fhir.jsonbytes import compact

#: Search parameters: a mapping (values may repeat as lists) or ordered (name, value) pairs.
Params = Mapping[str, str | Sequence[str]] | Sequence[tuple[str, str]]

TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def encode_json(body: Mapping[str, Any]) -> bytes:
    """A request body as sent: compact, UTF-8, in the body's own key order."""
    return compact(body)


class EncodedJson(dict[str, Any]):
    """A request body with its encoding made ahead of the request (a sync serializes its next
    bundle while the connections are busy with the others). It must not change after."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        super().__init__(body)
        self.content = encode_json(self)


def check_type(resource_type: str) -> str:
    """``resource_type`` when it looks like a FHIR resource type, else InvalidInputError."""
    if not isinstance(resource_type, str) or not TYPE_NAME.match(resource_type):
        raise InvalidInputError(Problem("request", "resourceType", "not a FHIR resource type"))
    return resource_type


def check_id(resource_id: str, field: str = "id") -> str:
    """``resource_id`` when it is a valid FHIR id (it goes into a URL path)."""
    if not isinstance(resource_id, str) or not _ID.match(resource_id):
        raise InvalidInputError(Problem("request", field, "not a valid FHIR id"))
    return resource_id


def query_params(params: Params | httpx.QueryParams) -> httpx.QueryParams:
    """``params`` as httpx query parameters (mapping or ordered pairs)."""
    if isinstance(params, httpx.QueryParams | Mapping):
        return httpx.QueryParams(params)
    pairs: list[tuple[str, str | int | float | bool | None]] = list(params)
    return httpx.QueryParams(pairs)


def query_text(query: str | Mapping[str, str]) -> str:
    """A conditional query (``a=1&b=2`` or a mapping) as text without a leading ``?``."""
    if isinstance(query, str):
        return query.lstrip("?")
    return str(httpx.QueryParams(query))


def type_of(resource: Mapping[str, Any]) -> str:
    """The checked ``resourceType`` of ``resource``."""
    return check_type(str(resource.get("resourceType", "")))


def merge_headers(
    headers: Mapping[str, str] | None, extra: Mapping[str, str], representation: bool
) -> dict[str, str]:
    """``headers`` plus ``extra``, asking for the written resource back unless the caller
    already chose a ``Prefer``."""
    merged = dict(headers or {})
    merged.update(extra)
    if representation and not any(k.lower() == "prefer" for k in merged):
        merged["Prefer"] = "return=representation"
    return merged


def require_body(
    response: FhirResponse, resource_type: str, method: str, path: str
) -> dict[str, Any]:
    """The response body when it is a ``resource_type``; FatalError otherwise."""
    body = response.body
    if body is None or body.get("resourceType") != resource_type:
        raise FatalError(
            f"expected a {resource_type} in the response",
            status=response.status,
            method=method,
            url=path.split("?", 1)[0],
        )
    return body


def bundle_is_idempotent(bundle: Mapping[str, Any], *, if_none_exist: bool = True) -> bool:
    """True when re-sending ``bundle`` cannot duplicate anything.

    Every entry must be GET/HEAD/PUT/DELETE or a POST with ``ifNoneExist`` (the latter only
    when the server honours it: ``if_none_exist``). (A PUT with ``ifMatch`` replayed after a
    lost response answers 412; that is safe, merely loud.)
    """
    for entry in bundle.get("entry") or []:
        request = (entry.get("request") if isinstance(entry, Mapping) else None) or {}
        method = str(request.get("method", "")).upper()
        if method in IDEMPOTENT_METHODS:
            continue
        if method == "POST" and request.get("ifNoneExist") and if_none_exist:
            continue
        return False
    return True
