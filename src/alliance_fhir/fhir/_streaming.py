"""Streaming downloads (Bulk Data output files): the body is read chunk by chunk and cut
into lines, so a file of any size never sits whole in memory; only one line at a time, and
no line longer than ``max_line_bytes``.

Not retried: a download cut off half way cannot resume where it stopped (NDJSON has no
offsets a server must honour), so the caller decides whether to start the file again.
Errors are ours (``_errors``), with the path of the URL only, never its query.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

import httpx

from alliance_fhir.fhir._auth import Auth, AuthContext
from alliance_fhir.fhir._errors import error_for_response, refuse, translate_transport_error

#: How much of an error body is read (for its OperationOutcome); the rest is dropped.
_ERROR_BODY_BYTES = 64 * 1024


def _split_lines(
    chunks: Iterator[bytes], *, url: httpx.URL, max_line_bytes: int
) -> Iterator[bytes]:
    """Lines (without their ``\\n``/``\\r\\n``) from a stream of byte chunks."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        while (cut := pending.find(b"\n")) >= 0:
            line = bytes(pending[:cut])
            del pending[: cut + 1]
            yield line.removesuffix(b"\r")
        if len(pending) > max_line_bytes:
            raise refuse(f"a line is longer than {max_line_bytes} bytes", method="GET", url=url)
    if pending:
        yield bytes(pending).removesuffix(b"\r")


def _head(response: httpx.Response) -> bytes:
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= _ERROR_BODY_BYTES:
            break
    return bytes(data[:_ERROR_BODY_BYTES])


def stream_lines(
    http: httpx.Client,
    url: httpx.URL,
    *,
    headers: Mapping[str, str],
    auth: Auth | None,
    auth_ctx: AuthContext,
    max_line_bytes: int,
) -> Iterator[bytes]:
    """GET ``url`` and yield its body line by line (bytes, line ending removed).

    With ``auth`` the request carries our credentials (refreshed once on a 401 the auth
    flow says a new token may cure). A non-2xx answer raises the usual exception, with the
    OperationOutcome from the first 64 KiB of the body.
    """
    credential = auth.authorization(auth_ctx) if auth else None
    refreshed = False
    while True:
        sent = dict(headers)
        if credential:
            sent["Authorization"] = credential
        request = http.build_request("GET", url, headers=sent)
        try:
            response = http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, method="GET", url=url) from exc
        try:
            status = response.status_code
            if status == 401 and auth and not refreshed and auth.unauthorized(credential):
                credential = auth.authorization(auth_ctx)
                refreshed = True
                continue
            if not 200 <= status < 300:
                raise error_for_response(response, _head(response), method="GET", now=time.time())
            yield from _split_lines(response.iter_bytes(), url=url, max_line_bytes=max_line_bytes)
            return
        except httpx.HTTPError as exc:
            raise translate_transport_error(exc, method="GET", url=url) from exc
        finally:
            response.close()
