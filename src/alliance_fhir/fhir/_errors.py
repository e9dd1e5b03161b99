"""The one place where httpx errors and HTTP error responses become our exceptions.

Status mapping (what the caller should do)::

    429, 502, 503, 504, timeouts, resets   RetriableError (retry_after from Retry-After)
    500                                    RetriableError for reads (GET/HEAD) only, else FatalError
    409, 412                               ConflictError
    400, 422                               ServerRejectedError (carries the OperationOutcome)
    3xx, 401, 403, 404, 405, 410, other    FatalError

Why 500 is retried only for reads: on a write the server state is unknown after a 500, and
HAPI-style servers return 500 for deterministic bugs as often as for transient database
trouble; re-sending a read costs nothing, re-sending a write may hammer a bug or race.

Every error carries method and a PHI-free url: the path only, never the query string
(searches and conditional writes put identifiers there).
"""

from __future__ import annotations

import email.utils
import json
import ssl
from collections.abc import Mapping
from typing import Any

import httpx

from alliance_fhir.exceptions import (
    ConflictError,
    FatalError,
    FhirError,
    RetriableError,
    ServerRejectedError,
)

_RETRIABLE_STATUS = frozenset({429, 502, 503, 504})
_READ_METHODS = frozenset({"GET", "HEAD"})


def safe_path(url: httpx.URL | str) -> str:
    """The path of ``url`` without query or fragment: safe to log and to put in errors."""
    return httpx.URL(url).path if isinstance(url, str) else url.path


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent.

    ``now`` is the wall clock (epoch seconds) an HTTP-date is measured against.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; be lenient with sloppy servers
        return None
    return max(0.0, when.timestamp() - now)


def is_json_type(content_type: str | None) -> bool:
    """True for ``application/fhir+json``, ``application/json`` and other ``+json`` types."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def outcome_from(body: bytes, content_type: str | None) -> dict[str, Any] | None:
    """The OperationOutcome in an error body, or None (HTML error pages, garbage, empty)."""
    if not body or not is_json_type(content_type):
        return None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and data.get("resourceType") == "OperationOutcome":
        return data
    return None


def error_for_response(
    response: httpx.Response,
    body: bytes,
    *,
    method: str,
    now: float,
) -> FhirError:
    """The exception for a non-2xx response (caller has already read ``body``, bounded)."""
    status = response.status_code
    url = safe_path(response.request.url)
    outcome = outcome_from(body, response.headers.get("content-type"))
    reason = response.reason_phrase or ""
    message = f"{method} {url} -> {status} {reason}".rstrip()
    kw: dict[str, Any] = {"status": status, "outcome": outcome, "method": method, "url": url}
    if status in _RETRIABLE_STATUS or (status == 500 and method in _READ_METHODS):
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=now)
        return RetriableError(message, retry_after=retry_after, **kw)
    if status in (409, 412):
        return ConflictError(message, **kw)
    if status in (400, 422):
        return ServerRejectedError(message, **kw)
    if 300 <= status < 400:
        return FatalError(f"{message} (redirects are not followed)", **kw)
    return FatalError(message, **kw)


def _caused_by_certificate(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def translate_transport_error(exc: httpx.HTTPError, *, method: str, url: httpx.URL) -> FhirError:
    """Map an httpx exception (no response, or body cut off) to our hierarchy.

    Timeouts, connection failures and resets are retriable; a certificate that fails
    verification is fatal (retrying would not help and must not be worked around);
    anything else (bad URL, local protocol misuse, undecodable body) is fatal.
    """
    path = safe_path(url)
    # httpx messages name the failure ("Connection refused"), not the URL; keep them short.
    detail = f"{type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")
    kw: dict[str, Any] = {"method": method, "url": path}
    if _caused_by_certificate(exc):
        return FatalError(f"{method} {path}: TLS certificate verification failed", **kw)
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return RetriableError(f"{method} {path}: {detail}", **kw)
    return FatalError(f"{method} {path}: {detail}", **kw)


def refuse(message: str, *, method: str, url: httpx.URL, status: int | None = None) -> FatalError:
    """A FatalError for a response we will not trust (too large, not JSON, wrong origin)."""
    path = safe_path(url)
    return FatalError(f"{method} {path}: {message}", status=status, method=method, url=path)


def header_map(headers: httpx.Headers) -> Mapping[str, str]:
    """Response headers as a plain dict with lower-case names (last value wins)."""
    return {k.lower(): v for k, v in headers.items()}
