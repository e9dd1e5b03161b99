"""The synchronous FHIR R4 client.

One ``FhirClient`` wraps one pooled ``httpx.Client`` and is safe to share between threads
(the sync engine's concurrency): it keeps no per-request state, and the auth flows lock
their token cache.

Safety rules enforced here rather than left to callers:

* requests carrying our Authorization header go to the configured origin only (paging links
  included); redirects are never followed;
* only idempotent requests are retried (GET, PUT, DELETE, POST with If-None-Exist while
  ``honours_if_none_exist``, POST ``_search``, transaction/batch bundles whose entries are
  all idempotent, or when the caller says ``idempotent=True``): a plain POST that timed out
  may have created something, and so may a conditional one on a server that ignores
  If-None-Exist (set ``honours_if_none_exist = False`` from its CapabilityStatement);
* responses are size-bounded and must be JSON objects;
* the one log line per request names method, interaction, resource type, status, duration,
  attempt and request id: never the query string, body or headers.

The interactions stay in this one module beside ``_execute``: these rules hold only if every
request goes through it. Transport, auth, errors, paging, retries, I/O-free request building
(``_requests``) and streamed downloads (``_streaming``) live in the private modules around it.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from alliance_fhir import __version__
from alliance_fhir.exceptions import (
    ConfigError,
    FatalError,
    FhirError,
    InvalidInputError,
    Problem,
    RetriableError,
)
from alliance_fhir.fhir._auth import Auth, AuthContext, TokenEndpointError
from alliance_fhir.fhir._errors import error_for_response, header_map, safe_path
from alliance_fhir.fhir._paging import bundle_resources, next_link, resolve_next
from alliance_fhir.fhir._requests import (
    IDEMPOTENT_METHODS,
    TYPE_NAME,
    EncodedJson,
    Params,
    bundle_is_idempotent,
    check_id,
    check_type,
    encode_json,
    merge_headers,
    query_params,
    query_text,
    require_body,
    type_of,
)
from alliance_fhir.fhir._results import FhirResponse, ReadResult, WriteResult, etag_for
from alliance_fhir.fhir._retry import RetryPolicy, call_with_retry
from alliance_fhir.fhir._streaming import stream_lines
from alliance_fhir.fhir._transport import (
    build_http_client,
    origin,
    parse_json_object,
    refuse_plain_http,
    send_bounded,
    service_base,
)
from alliance_fhir.log import get_logger, new_id

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
DEFAULT_USER_AGENT = f"alliance-fhir/{__version__}"
MiB = 1024 * 1024


def _log() -> Any:
    # Looked up per use, so a later ``logging.configure`` (CLI, tests) takes effect.
    return get_logger("alliance_fhir.fhir")


class FhirClient:
    """A thread-safe FHIR R4 client for one server (``base_url`` is the service base).

    ``verify`` is True (system CAs), a CA bundle path, or an ``ssl.SSLContext``; ``False``
    only when passed explicitly, and it logs a warning. With ``auth``, a plain ``http://``
    base other than loopback is refused unless ``allow_insecure_http``. ``sleep`` and
    ``clock`` (monotonic seconds) are injectable so tests neither sleep nor race the retry
    deadline.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: Auth | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        verify: bool | str | ssl.SSLContext = True,
        max_connections: int = 8,
        max_response_bytes: int = 64 * MiB,
        max_pages: int = 1000,
        user_agent: str = DEFAULT_USER_AGENT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        allow_insecure_http: bool = False,
    ) -> None:
        self.base_url = service_base(base_url)
        if auth is not None:
            refuse_plain_http(self.base_url, "credentials", allow=allow_insecure_http)
        self._origin = origin(self.base_url)
        self._auth = auth
        self._retry = retry if retry is not None else RetryPolicy()
        if max_response_bytes < 1 or max_pages < 1 or max_connections < 1:
            raise ConfigError("max_response_bytes, max_pages and max_connections must be >= 1")
        self._limit = max_response_bytes
        self._max_pages = max_pages
        self._user_agent = user_agent
        self._sleep = sleep
        self._clock = clock
        self._http = build_http_client(
            transport=transport, timeout=timeout, verify=verify, max_connections=max_connections
        )
        self._auth_ctx = AuthContext(http=self._http, base_url=self.base_url)
        #: Whether the server honours If-None-Exist; when False a conditional create is not
        #: retried (a replay could create a second copy). Set from the CapabilityStatement.
        self.honours_if_none_exist = True

    def __repr__(self) -> str:
        return f"FhirClient({str(self.base_url)!r}, auth={self._auth!r})"

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close pooled connections."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- interactions ---------------------------------------------------------------------

    def capabilities(
        self, *, headers: Mapping[str, str] | None = None, elements: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The server's CapabilityStatement (GET /metadata); with ``elements``, asked for
        just those (``_elements``: a server may send more, or all of it)."""
        params = {"_elements": ",".join(elements)} if elements else None
        response = self._execute(
            "GET", self._url("metadata", params), headers=headers, interaction="capabilities"
        )
        return require_body(response, "CapabilityStatement", "GET", "metadata")

    def granted_scope(self) -> str | None:
        """The scope our credentials were granted (fetching a token); None without scopes."""
        return self._auth.granted(self._auth_ctx) if self._auth else None

    def read(
        self, resource_type: str, resource_id: str, *, headers: Mapping[str, str] | None = None
    ) -> ReadResult:
        """GET Type/id; FatalError with status 404/410 when missing or deleted."""
        path = f"{check_type(resource_type)}/{check_id(resource_id)}"
        response = self._execute(
            "GET", self._url(path), headers=headers, interaction="read", resource_type=resource_type
        )
        require_body(response, resource_type, "GET", path)
        return ReadResult.from_response(response)

    def vread(
        self,
        resource_type: str,
        resource_id: str,
        version_id: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> ReadResult:
        """GET Type/id/_history/vid."""
        path = (
            f"{check_type(resource_type)}/{check_id(resource_id)}"
            f"/_history/{check_id(version_id, 'versionId')}"
        )
        response = self._execute(
            "GET",
            self._url(path),
            headers=headers,
            interaction="vread",
            resource_type=resource_type,
        )
        require_body(response, resource_type, "GET", path)
        return ReadResult.from_response(response)

    def search_page(
        self,
        resource_type: str | None,
        params: Params | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The first search Bundle (GET Type?params, or system search when type is None)."""
        path = check_type(resource_type) if resource_type else ""
        url = self._url(path, params)
        interaction = "search-type" if resource_type else "search-system"
        return self._get_bundle(url, headers, interaction, resource_type)

    def iter_pages(
        self,
        resource_type: str | None,
        params: Params | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        max_pages: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Search Bundles, following ``next`` links on our origin only.

        More than ``max_pages`` pages is a FatalError rather than a silent truncation, so a
        sync never mistakes a partial pull for a complete one.
        """
        limit = max_pages if max_pages is not None else self._max_pages
        interaction = "search-type" if resource_type else "search-system"
        bundle = self.search_page(resource_type, params, headers=headers)
        pages = 1
        yield bundle
        while (href := next_link(bundle)) is not None:
            if pages >= limit:
                raise FatalError(
                    f"search returned more than {limit} pages; stopping (raise max_pages?)",
                    method="GET",
                    url=safe_path(self._url(resource_type or "")),
                )
            url = resolve_next(self.base_url, href)
            bundle = self._get_bundle(url, headers, interaction, resource_type)
            pages += 1
            yield bundle

    def search(
        self,
        resource_type: str | None,
        params: Params | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        max_pages: int | None = None,
        matches_only: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """Every matching resource on all pages (``_include``-d ones too unless matches_only)."""
        for bundle in self.iter_pages(resource_type, params, headers=headers, max_pages=max_pages):
            yield from bundle_resources(bundle, matches_only=matches_only)

    def create(
        self,
        resource: Mapping[str, Any],
        *,
        if_none_exist: str | Mapping[str, str] | None = None,
        return_representation: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> WriteResult:
        """POST Type. With ``if_none_exist`` (a search query) the create is conditional, so
        repeatable: status 200 then means it already existed. Only then is it retried, and
        only on a server that honours If-None-Exist (``honours_if_none_exist``)."""
        resource_type = type_of(resource)
        extra: dict[str, str] = {}
        if if_none_exist is not None:
            extra["If-None-Exist"] = query_text(if_none_exist)
        response = self._execute(
            "POST",
            self._url(resource_type),
            body=resource,
            headers=merge_headers(headers, extra, return_representation),
            idempotent=if_none_exist is not None and self.honours_if_none_exist,
            interaction="create",
            resource_type=resource_type,
        )
        return WriteResult.from_response(response)

    def update(
        self,
        resource: Mapping[str, Any],
        *,
        if_match: str | None = None,
        conditional: str | Mapping[str, str] | None = None,
        return_representation: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> WriteResult:
        """PUT Type/id, or PUT Type?conditional (create-or-update by search).

        ``if_match`` is a version id (``3``) or an ETag (``W/"3"``); a mismatch raises
        ConflictError: someone else changed the resource, so we never overwrite blindly.
        """
        resource_type = type_of(resource)
        if conditional is not None:
            url = self._url(resource_type, httpx.QueryParams(query_text(conditional)))
        else:
            resource_id = resource.get("id")
            if not isinstance(resource_id, str):
                raise InvalidInputError(
                    Problem("request", "id", "update needs resource.id or a conditional query")
                )
            url = self._url(f"{resource_type}/{check_id(resource_id)}")
        extra = {"If-Match": etag_for(if_match)} if if_match else {}
        response = self._execute(
            "PUT",
            url,
            body=resource,
            headers=merge_headers(headers, extra, return_representation),
            interaction="update",
            resource_type=resource_type,
        )
        return WriteResult.from_response(response)

    def delete(
        self,
        resource_type: str,
        resource_id: str | None = None,
        *,
        conditional: str | Mapping[str, str] | None = None,
        missing_ok: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> WriteResult:
        """DELETE Type/id or DELETE Type?conditional.

        With ``missing_ok`` a 404/410 counts as done: a retried delete whose first response
        was lost must not fail.
        """
        check_type(resource_type)
        if (resource_id is None) == (conditional is None):
            raise InvalidInputError(
                Problem("request", "id", "delete needs exactly one of resource_id or conditional")
            )
        if resource_id is not None:
            url = self._url(f"{resource_type}/{check_id(resource_id)}")
        else:
            assert conditional is not None  # for mypy: checked just above
            url = self._url(resource_type, httpx.QueryParams(query_text(conditional)))
        try:
            response = self._execute(
                "DELETE", url, headers=headers, interaction="delete", resource_type=resource_type
            )
        except FatalError as exc:
            if missing_ok and exc.status in (404, 410):
                return WriteResult(exc.status, None, resource_id, None, None, None, exc.outcome)
            raise
        return WriteResult.from_response(response)

    def transaction(
        self,
        bundle: Mapping[str, Any],
        *,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST a ``transaction`` Bundle; all-or-nothing. Retried only when every entry is
        idempotent (see ``bundle_is_idempotent``) or ``idempotent=True``."""
        return self._post_bundle(bundle, "transaction", idempotent, headers)

    def batch(
        self,
        bundle: Mapping[str, Any],
        *,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST a ``batch`` Bundle; each entry succeeds or fails alone (see ``entry_results``)."""
        return self._post_bundle(bundle, "batch", idempotent, headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> FhirResponse:
        """Any other interaction (operations, history, PATCH, ...), relative to the base.

        Idempotency defaults from the method (and If-None-Exist / ``_search`` for POST).
        """
        method = method.upper()
        url = self._url(path, params)
        if idempotent is None:
            has_ine = any(k.lower() == "if-none-exist" for k in (headers or {}))
            idempotent = method in IDEMPOTENT_METHODS or (
                method == "POST"
                and ((has_ine and self.honours_if_none_exist) or url.path.endswith("/_search"))
            )
        first = path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        resource_type = first if TYPE_NAME.match(first) else None
        interaction = "operation" if "$" in url.path else "custom"
        return self._execute(
            method,
            url,
            body=body,
            headers=headers,
            idempotent=idempotent,
            interaction=interaction,
            resource_type=resource_type,
        )

    def stream_lines(
        self, url: str, *, authorize: bool = True, accept: str = NDJSON
    ) -> Iterator[bytes]:
        """GET ``url`` (relative to the base, or absolute on our origin) line by line, never
        holding the body whole (Bulk Data files); our credentials only with ``authorize``.
        Not retried (see ``_streaming``)."""
        target = self._url(url)
        self._check_origin("GET", target)
        headers = {"Accept": accept, "User-Agent": self._user_agent, "X-Request-Id": new_id()}
        return stream_lines(
            self._http,
            target,
            headers=headers,
            auth=self._auth if authorize else None,
            auth_ctx=self._auth_ctx,
            max_line_bytes=self._limit,
        )

    # -- internals ------------------------------------------------------------------------

    def _check_origin(self, method: str, url: httpx.URL) -> None:
        if origin(url) != self._origin:
            raise FatalError(
                f"refusing to send to another origin ({url.scheme}://{url.host})",
                method=method,
                url=url.path,
            )

    def _url(self, path: str, params: Params | httpx.QueryParams | None = None) -> httpx.URL:
        url = self.base_url.join(path) if path else self.base_url
        if params:
            url = url.copy_merge_params(query_params(params))
        return url

    def _get_bundle(
        self,
        url: httpx.URL,
        headers: Mapping[str, str] | None,
        interaction: str,
        resource_type: str | None,
    ) -> dict[str, Any]:
        response = self._execute(
            "GET", url, headers=headers, interaction=interaction, resource_type=resource_type
        )
        return require_body(response, "Bundle", "GET", url.path)

    def _post_bundle(
        self,
        bundle: Mapping[str, Any],
        kind: str,
        idempotent: bool | None,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != kind:
            raise InvalidInputError(
                Problem("request", "Bundle.type", f"expected a Bundle of type {kind}")
            )
        response = self._execute(
            "POST",
            self.base_url,
            body=bundle,
            headers=headers,
            idempotent=(
                bundle_is_idempotent(bundle, if_none_exist=self.honours_if_none_exist)
                if idempotent is None
                else idempotent
            ),
            interaction=kind,
        )
        return require_body(response, "Bundle", "POST", self.base_url.path)

    def _execute(
        self,
        method: str,
        url: httpx.URL,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        interaction: str,
        resource_type: str | None = None,
    ) -> FhirResponse:
        self._check_origin(method, url)
        if any(k.lower() == "authorization" for k in (headers or {})):
            raise ConfigError("pass credentials through auth=, not as a header")
        if body is None:
            content = None
        else:
            content = body.content if isinstance(body, EncodedJson) else encode_json(body)
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        request_id = new_id()
        attempts = 0
        labels = {
            "method": method,
            "interaction": interaction,
            "resource_type": resource_type,
            "request_id": request_id,
        }

        def once() -> FhirResponse:
            nonlocal attempts
            attempts += 1
            return self._send_once(method, url, content, headers, labels, attempts)

        if not idempotent:
            return once()

        def on_retry(error: RetriableError, attempt: int, delay: float) -> None:
            if isinstance(error, TokenEndpointError):  # no FHIR request was sent
                _log().warning(
                    "fhir.token_retry", endpoint=error.endpoint, attempt=attempt, error=str(error)
                )
                return
            _log().warning(
                "fhir.retry",
                **labels,
                status=error.status,
                attempt=attempt,
                delay_s=round(delay, 3),
                retry_after=error.retry_after,
            )

        return call_with_retry(
            once, self._retry, sleep=self._sleep, clock=self._clock, on_retry=on_retry
        )

    def _send_once(
        self,
        method: str,
        url: httpx.URL,
        content: bytes | None,
        extra: Mapping[str, str] | None,
        labels: Mapping[str, Any],
        attempt: int,
    ) -> FhirResponse:
        auth = self._auth
        credential = auth.authorization(self._auth_ctx) if auth else None
        refreshed = False
        while True:
            headers = {
                "Accept": FHIR_JSON,
                "Content-Type": FHIR_JSON,
                "User-Agent": self._user_agent,
                "X-Request-Id": str(labels["request_id"]),
                **(extra or {}),
            }
            if credential:
                headers["Authorization"] = credential
            request = self._http.build_request(method, url, content=content, headers=headers)
            started = time.perf_counter()
            try:
                response, data = send_bounded(self._http, request, limit=self._limit)
            except FhirError as exc:
                self._log_request(labels, attempt, started, exc.status, type(exc).__name__)
                raise
            self._log_request(labels, attempt, started, response.status_code, None)
            if (
                response.status_code == 401
                and auth
                and not refreshed
                and auth.unauthorized(credential)
            ):
                credential = auth.authorization(self._auth_ctx)
                refreshed = True
                continue
            break
        if not 200 <= response.status_code < 300:
            raise error_for_response(response, data, method=method, now=time.time())
        body = parse_json_object(response, data, method=method)
        return FhirResponse(response.status_code, header_map(response.headers), body)

    @staticmethod
    def _log_request(
        labels: Mapping[str, Any],
        attempt: int,
        started: float,
        status: int | None,
        error: str | None,
    ) -> None:
        _log().debug(
            "fhir.request",
            **labels,
            status=status,
            attempt=attempt,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
            error=error,
        )
