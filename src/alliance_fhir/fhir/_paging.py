"""Following search Bundles' ``next`` links, on our server only.

A ``next`` link is data the server sent us; if it pointed at another origin and we followed
it with our Authorization header, the token (and the identifiers in the query) would go
there. So a foreign link is a FatalError and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from alliance_fhir.exceptions import FatalError
from alliance_fhir.fhir._transport import origin


def next_link(bundle: dict[str, Any]) -> str | None:
    """The ``link[relation=next].url`` of a Bundle, if any."""
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            if isinstance(url, str) and url.strip():
                return url.strip()
    return None


def resolve_next(base_url: httpx.URL, href: str) -> httpx.URL:
    """``href`` resolved against the service base; FatalError unless it is on our origin."""
    try:
        target = base_url.join(href)
    except httpx.InvalidURL as exc:
        raise FatalError("search next link is not a valid URL", url=base_url.path) from exc
    if origin(target) != origin(base_url):
        # Name only the foreign host: the link's query may hold identifiers.
        raise FatalError(
            f"search next link points to another origin ({target.scheme}://{target.host}); "
            "refusing to follow it",
            method="GET",
            url=target.path,
        )
    return target


def bundle_resources(
    bundle: dict[str, Any], *, matches_only: bool = True
) -> Iterator[dict[str, Any]]:
    """The resources of a Bundle's entries; with ``matches_only``, skip _include and outcomes."""
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        mode = (entry.get("search") or {}).get("mode")
        if matches_only and mode not in (None, "match"):
            continue
        yield resource
