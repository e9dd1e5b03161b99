"""The transport seam: building the one ``httpx.Client``, bounded reads, origin checks.

Bodies are read with a byte limit *after* content decoding, so neither a lying
Content-Length nor a gzip bomb can make us hold more than ``max_response_bytes``.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from alliance_fhir.exceptions import ConfigError
from alliance_fhir.fhir._errors import is_json_type, refuse, translate_transport_error
from alliance_fhir.log import get_logger
from alliance_fhir.net import is_loopback

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port made explicit, for same-origin checks."""
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or _DEFAULT_PORTS.get(scheme)


def service_base(base_url: str) -> httpx.URL:
    """``base_url`` as the client's service base (ending in ``/``): an absolute http(s) URL
    without credentials, query or fragment; plain http to another machine is logged."""
    try:
        url = httpx.URL(base_url.rstrip("/") + "/")
    except httpx.InvalidURL as exc:
        raise ConfigError("FHIR base URL is not a valid URL") from exc
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError("FHIR base URL must be an absolute http(s) URL")
    if url.query or url.fragment or url.userinfo:
        raise ConfigError("FHIR base URL must not contain credentials, a query or fragment")
    if url.scheme == "http" and not is_loopback(url.host):
        get_logger("alliance_fhir.fhir").warning("fhir.plain_http", host=url.host)
    return url


def build_http_client(
    *,
    transport: httpx.BaseTransport | None,
    timeout: float,
    verify: bool | str | ssl.SSLContext,
    max_connections: int,
) -> httpx.Client:
    """One pooled client; redirects are never followed (they could carry our token away)."""
    if verify is False:
        get_logger("alliance_fhir.fhir").warning(
            "fhir.tls_verification_disabled",
            reason="verify=False was passed explicitly; do not use this in production",
        )
    try:
        tls = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA bundle {verify}: {exc}") from exc
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        verify=tls,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
    )


def send_bounded(
    http: httpx.Client, request: httpx.Request, *, limit: int
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read at most ``limit`` body bytes; refuse anything larger."""
    method = request.method
    try:
        response = http.send(request, stream=True)
        try:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise refuse(
                    f"response of {declared} bytes exceeds the {limit}-byte limit",
                    method=method,
                    url=request.url,
                    status=response.status_code,
                )
            buffer = bytearray()
            for chunk in response.iter_bytes():
                buffer += chunk
                if len(buffer) > limit:
                    raise refuse(
                        f"response exceeds the {limit}-byte limit",
                        method=method,
                        url=request.url,
                        status=response.status_code,
                    )
        finally:
            response.close()
    except httpx.HTTPError as exc:
        raise translate_transport_error(exc, method=method, url=request.url) from exc
    return response, bytes(buffer)


def parse_json_object(
    response: httpx.Response, body: bytes, *, method: str
) -> dict[str, Any] | None:
    """The JSON object in a successful response; None when empty; refuse anything else."""
    if not body.strip():
        return None
    if not is_json_type(response.headers.get("content-type")):
        raise refuse(
            "response is not JSON (content-type "
            f"{response.headers.get('content-type', 'missing')!r})",
            method=method,
            url=response.request.url,
            status=response.status_code,
        )
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise refuse(
            "response body is not valid JSON",
            method=method,
            url=response.request.url,
            status=response.status_code,
        ) from exc
    if not isinstance(data, dict):
        raise refuse(
            "response JSON is not an object",
            method=method,
            url=response.request.url,
            status=response.status_code,
        )
    return data


def refuse_plain_http(url: httpx.URL | str, what: str, *, allow: bool) -> None:
    """ConfigError when ``what`` (credentials, a token request) would go over plain
    ``http://`` to another machine and ``allow_insecure_http`` was not set."""
    target = httpx.URL(url) if isinstance(url, str) else url
    if target.scheme == "http" and not is_loopback(target.host) and not allow:
        raise ConfigError(
            f"refusing to send {what} over plain http:// to {target.host}: use https://, "
            "or set allow_insecure_http = true if the network path is protected otherwise"
        )
