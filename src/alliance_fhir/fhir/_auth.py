"""Authentication flows: HTTP basic, a static bearer token, SMART Backend Services.

Secrets come from the environment or from files (``Secret.from_env`` / ``Secret.from_file``),
never from argv, where any user on the host can read them. Every secret, and every access
token we obtain, is registered with the log scrubber, and no ``repr`` shows one.

The client asks an ``Auth`` for an ``Authorization`` value before each request and tells it
about a 401; the SMART flow then drops its cached token so the client can retry once.
A token-endpoint failure is a ``TokenEndpointError`` (``TokenEndpointUnavailable``, retriable;
``TokenEndpointRefused``, our credentials refused) saying "token endpoint <host>: <error>
<error_description>": the reader learns where it failed, never from the FHIR interaction
that happened to need a token.
"""

from __future__ import annotations

import abc
import base64
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from alliance_fhir.exceptions import ConfigError, FatalError, FhirError, RetriableError
from alliance_fhir.fhir._errors import parse_retry_after, safe_path
from alliance_fhir.fhir._transport import parse_json_object, refuse_plain_http, send_bounded
from alliance_fhir.log import get_logger, register_sensitive

_TOKEN_RESPONSE_LIMIT = 1024 * 1024
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ALGORITHMS = ("RS384", "ES384")
#: The client assertion's lifetime: under the 300 s SMART allows, so a client clock a little
#: ahead of the server's is not refused by a strict server.
_ASSERTION_LIFETIME = 240.0
#: After a failed early refresh, try again after this share of the token's remaining life.
_EARLY_RETRY_SHARE = 0.25
_DESCRIPTION_LIMIT = 200


class TokenEndpointError(FhirError):
    """The token endpoint failed us; ``endpoint`` is its host (and port), never a secret."""

    endpoint: str = ""


class TokenEndpointUnavailable(TokenEndpointError, RetriableError):
    """The token endpoint could not be reached or answered 429/5xx: try again later."""


class TokenEndpointRefused(TokenEndpointError, FatalError):
    """The token endpoint refused our credentials (or answered unusably): fix them.

    ``status`` is 401 whatever the HTTP status was (servers answer 400 or 401 for
    ``invalid_client``): either way our credentials were refused; the message keeps the
    real status."""


class Secret:
    """A string that must never be printed or logged; ``reveal()`` is the only way out."""

    __slots__ = ("_origin", "_value")

    def __init__(self, value: str, *, origin: str = "literal") -> None:
        if not value:
            raise ConfigError(f"secret from {origin} is empty")
        self._value = value
        self._origin = origin
        # Mask the whole value and, for PEM keys, each line of it.
        lines = [ln.strip() for ln in value.splitlines()]
        register_sensitive(value, *(ln for ln in lines if len(ln) >= 16 and "-----" not in ln))

    @classmethod
    def from_env(cls, name: str) -> Secret:
        """Read a secret from environment variable ``name`` (ConfigError when unset/empty)."""
        value = os.environ.get(name, "")
        if not value.strip():
            raise ConfigError(f"environment variable {name} is not set or empty")
        return cls(value.strip(), origin=f"env:{name}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Secret:
        """Read a secret from a file; warns when group or others may read it."""
        file = Path(path)
        try:
            mode = file.stat().st_mode
            value = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {file}: {exc.strerror}") from exc
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            get_logger("alliance_fhir.fhir.auth").warning(
                "fhir.secret_file_permissions", path=str(file), mode=oct(mode & 0o777)
            )
        return cls(value.strip(), origin=f"file:{file}")

    def reveal(self) -> str:
        """The secret itself: pass it straight to where it is used, never to a log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret(<{self._origin}>)"

    __str__ = __repr__


@dataclass(frozen=True)
class AuthContext:
    """What an auth flow may use: the client's pooled connection and the FHIR base URL."""

    http: httpx.Client
    base_url: httpx.URL


class Auth(abc.ABC):
    """Supplies the Authorization header; thread-safe, since threads share one client."""

    @abc.abstractmethod
    def authorization(self, ctx: AuthContext) -> str | None:
        """The Authorization header value for the next request (may fetch a token)."""

    def unauthorized(self, used: str | None) -> bool:
        """The server answered 401 to ``used``; True if one retry with a fresh value may help."""
        return False

    def granted(self, ctx: AuthContext) -> str | None:
        """The scope an authorization server granted us; None when the flow has no scopes."""
        return None


class BasicAuth(Auth):
    """HTTP basic authentication (some test servers and gateways)."""

    def __init__(self, username: str, password: Secret) -> None:
        self._username = username
        raw = f"{username}:{password.reveal()}".encode()
        encoded = base64.b64encode(raw).decode("ascii")
        register_sensitive(encoded)
        self._header = f"Basic {encoded}"

    def authorization(self, ctx: AuthContext) -> str | None:
        return self._header

    def __repr__(self) -> str:
        return f"BasicAuth(username={self._username!r}, password=<hidden>)"


class BearerTokenAuth(Auth):
    """A static bearer token issued out of band; a 401 is final (we cannot renew it)."""

    def __init__(self, token: Secret) -> None:
        self._token = token

    def authorization(self, ctx: AuthContext) -> str | None:
        return f"Bearer {self._token.reveal()}"

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=<hidden>)"


def _load_private_key(
    pem: Secret, password: Secret | None
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(
            pem.reveal().encode(),
            password=password.reveal().encode() if password else None,
        )
    except (ValueError, TypeError) as exc:
        # The library's message never contains key material, but keep ours generic anyway.
        raise ConfigError("SMART private key is not a readable PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key
    raise ConfigError("SMART private key must be RSA (RS384) or EC P-384 (ES384)")


def _algorithm_for(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, wanted: str | None) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise ConfigError("SMART RSA key must be at least 2048 bits")
        natural = "RS384"
    else:
        if not isinstance(key.curve, ec.SECP384R1):
            raise ConfigError("SMART EC key must be on curve P-384 (ES384)")
        natural = "ES384"
    if wanted is not None and wanted != natural:
        raise ConfigError(f"SMART algorithm {wanted} does not match the key (needs {natural})")
    return natural


class SmartBackendAuth(Auth):
    """SMART Backend Services: client_credentials with a ``private_key_jwt`` assertion.

    The token endpoint comes from ``{base}/.well-known/smart-configuration`` unless given.
    Tokens are cached and renewed ``refresh_skew`` seconds before expiry (or at half-life for
    very short tokens); a 401 drops the cached token once. A failed *early* refresh (the
    cached token still valid) keeps the cached token and tries again later; only a token
    at its end must be renewed or the request fails. ``granted_scope`` is what the last
    token response granted (SMART requires ``scope`` there; absent counts as nothing).
    ``clock`` is wall-clock epoch seconds, injectable for tests.
    """

    def __init__(
        self,
        *,
        client_id: str,
        private_key: Secret,
        key_id: str,
        scopes: str | Sequence[str],
        token_endpoint: str | None = None,
        algorithm: str | None = None,
        key_password: Secret | None = None,
        refresh_skew: float = 60.0,
        assertion_lifetime: float = _ASSERTION_LIFETIME,
        clock: Callable[[], float] = time.time,
        allow_insecure_http: bool = False,
    ) -> None:
        if not client_id or not key_id:
            raise ConfigError("SMART backend auth needs client_id and key_id")
        if algorithm is not None and algorithm not in _ALGORITHMS:
            raise ConfigError(f"SMART algorithm must be one of {', '.join(_ALGORITHMS)}")
        if not 0 < assertion_lifetime <= 300:
            raise ConfigError("SMART client assertion lifetime must be within 5 minutes")
        self.client_id = client_id
        self.key_id = key_id
        self.scopes = scopes if isinstance(scopes, str) else " ".join(scopes)
        if not self.scopes.strip():
            raise ConfigError("SMART backend auth needs at least one scope")
        self._key = _load_private_key(private_key, key_password)
        self.algorithm = _algorithm_for(self._key, algorithm)
        self._configured_endpoint = token_endpoint
        self._allow_insecure_http = allow_insecure_http
        if token_endpoint is not None:
            refuse_plain_http(
                token_endpoint, "the SMART client assertion", allow=allow_insecure_http
            )
        self._token_endpoint: str | None = token_endpoint
        self._skew = refresh_skew
        self._lifetime = assertion_lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0
        self._expires_at = 0.0
        self._margin = 0.0
        self.granted_scope: str | None = None

    def __repr__(self) -> str:
        return (
            f"SmartBackendAuth(client_id={self.client_id!r}, key_id={self.key_id!r}, "
            f"algorithm={self.algorithm!r}, scopes={self.scopes!r}, "
            f"token_endpoint={self._configured_endpoint!r})"
        )

    def authorization(self, ctx: AuthContext) -> str | None:
        # One lock around the fetch: concurrent threads wait for one refresh, not N of them.
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires_at - self._margin:
                self._fetch_token(ctx)
            elif now >= self._refresh_at:
                self._refresh_early(ctx, now)
            return f"Bearer {self._token}"

    def granted(self, ctx: AuthContext) -> str | None:
        """The scope granted to us (a token is fetched if none is cached)."""
        self.authorization(ctx)
        return self.granted_scope or ""

    def unauthorized(self, used: str | None) -> bool:
        with self._lock:
            if self._token is not None and used == f"Bearer {self._token}":
                self._token = None  # another thread may already have replaced it: keep that
        return True

    def client_assertion(self, token_endpoint: str) -> str:
        """A fresh signed JWT proving our identity to ``token_endpoint`` (single use)."""
        now = self._clock()
        claims: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_endpoint,
            "jti": secrets.token_urlsafe(24),
            "iat": int(now),
            "exp": int(now + self._lifetime),
        }
        assertion = jwt.encode(
            claims, self._key, algorithm=self.algorithm, headers={"kid": self.key_id, "typ": "JWT"}
        )
        register_sensitive(assertion)
        return assertion

    # -- internals -------------------------------------------------------------------------

    def _refresh_early(self, ctx: AuthContext, now: float) -> None:
        """Renew a still-valid token; on failure keep it and try again after a while."""
        try:
            self._fetch_token(ctx)
        except FhirError as exc:
            remaining = self._expires_at - self._margin - now
            self._refresh_at = now + max(1.0, remaining * _EARLY_RETRY_SHARE)
            get_logger("alliance_fhir.fhir.auth").warning(
                "fhir.token_refresh_deferred",
                endpoint=getattr(exc, "endpoint", None),
                error=str(exc),
                token_valid_s=int(remaining),
                retry_in_s=round(self._refresh_at - now, 1),
            )

    def _endpoint(self, ctx: AuthContext) -> str:
        if self._token_endpoint is None:
            endpoint = self._discover(ctx)
            refuse_plain_http(
                endpoint, "the SMART client assertion", allow=self._allow_insecure_http
            )
            self._token_endpoint = endpoint
        return self._token_endpoint

    def _discover(self, ctx: AuthContext) -> str:
        url = ctx.base_url.join(".well-known/smart-configuration")
        request = ctx.http.build_request("GET", url, headers={"Accept": "application/json"})
        response, body = send_bounded(ctx.http, request, limit=_TOKEN_RESPONSE_LIMIT)
        if response.status_code != 200:
            raise self._token_error("SMART discovery failed", response, body, url)
        config = parse_json_object(response, body, method="GET") or {}
        endpoint = config.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise FatalError(
                "SMART configuration has no token_endpoint", method="GET", url=safe_path(url)
            )
        target = httpx.URL(endpoint)
        if target.scheme not in ("http", "https") or not target.host:
            raise FatalError(
                "SMART token_endpoint is not an absolute http(s) URL",
                method="GET",
                url=safe_path(url),
            )
        if ctx.base_url.scheme == "https" and target.scheme != "https":
            raise FatalError(
                "SMART token_endpoint is not https while the FHIR server is",
                method="GET",
                url=safe_path(url),
            )
        return endpoint

    def _fetch_token(self, ctx: AuthContext) -> None:
        endpoint = self._endpoint(ctx)
        host = httpx.URL(endpoint).netloc.decode("ascii", "replace")
        form = {
            "grant_type": "client_credentials",
            "scope": self.scopes,
            "client_assertion_type": _ASSERTION_TYPE,
            "client_assertion": self.client_assertion(endpoint),
        }
        request = ctx.http.build_request(
            "POST", endpoint, data=form, headers={"Accept": "application/json"}
        )
        try:
            response, body = send_bounded(ctx.http, request, limit=_TOKEN_RESPONSE_LIMIT)
        except FhirError as exc:
            # The transport's message starts with the request line; ours names the endpoint.
            reason = str(exc).split(": ", 1)[-1]
            raise _endpoint_error(
                TokenEndpointUnavailable
                if isinstance(exc, RetriableError)
                else TokenEndpointRefused,
                host,
                f"unreachable ({reason})",
                request.url,
            ) from exc
        if response.status_code != 200:
            raise self._token_endpoint_error(host, response, body, request.url)
        try:
            data = parse_json_object(response, body, method="POST") or {}
        except FatalError as exc:
            raise _endpoint_error(
                TokenEndpointRefused, host, "answer is not JSON", request.url, status=401
            ) from exc
        token = data.get("access_token")
        token_type = str(data.get("token_type", "bearer")).lower()
        if not isinstance(token, str) or not token or token_type != "bearer":  # noqa: S105 - OAuth token_type
            raise _endpoint_error(
                TokenEndpointRefused,
                host,
                "answer has no bearer access_token",
                request.url,
                status=401,
            )
        register_sensitive(token)
        try:
            expires_in = float(data.get("expires_in", 300))
        except (TypeError, ValueError):
            expires_in = 300.0
        expires_in = max(expires_in, 1.0)
        now = self._clock()
        self._token = token
        self._refresh_at = now + expires_in - min(self._skew, expires_in / 2)
        self._expires_at = now + expires_in
        # The end of a token's use: a little before its expiry, for the request's own time.
        self._margin = min(5.0, expires_in * 0.05)
        scope = data.get("scope")
        self.granted_scope = scope if isinstance(scope, str) else ""
        get_logger("alliance_fhir.fhir.auth").info(
            "fhir.token_obtained",
            expires_in=int(expires_in),
            granted_scope=self.granted_scope,
        )

    def _token_endpoint_error(
        self, host: str, response: httpx.Response, body: bytes, url: httpx.URL
    ) -> TokenEndpointError:
        """The token endpoint said no: "token endpoint <host>: <error> <error_description>"."""
        status = response.status_code
        code = description = ""
        try:
            data = parse_json_object(response, body, method="POST") or {}
            code = str(data.get("error", ""))[:100]
            description = str(data.get("error_description", ""))[:_DESCRIPTION_LIMIT]
        except FatalError:
            pass
        reason = " ".join(part for part in (code, description) if part) or "no error given"
        reason += f" (HTTP {status})"
        get_logger("alliance_fhir.fhir.auth").warning(
            "fhir.token_refused", endpoint=host, status=status, error=code, reason=description
        )
        if status in (429, 500, 502, 503, 504):
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=time.time())
            return _endpoint_error(
                TokenEndpointUnavailable, host, reason, url, status=status, retry_after=retry_after
            )
        return _endpoint_error(TokenEndpointRefused, host, reason, url, status=401)

    def _token_error(
        self, message: str, response: httpx.Response, body: bytes, url: httpx.URL
    ) -> RetriableError | FatalError:
        status = response.status_code
        path = safe_path(url)
        method = response.request.method
        code = ""
        try:
            data = parse_json_object(response, body, method=method) or {}
            code = str(data.get("error", ""))[:100]
        except FatalError:
            pass
        text = f"{message}: {status}" + (f" {code}" if code else "")
        if status in (429, 500, 502, 503, 504):
            retry_after = parse_retry_after(response.headers.get("retry-after"), now=time.time())
            return RetriableError(
                text, retry_after=retry_after, status=status, method=method, url=path
            )
        return FatalError(text, status=status, method=method, url=path)


def _endpoint_error(
    kind: type[TokenEndpointUnavailable] | type[TokenEndpointRefused],
    host: str,
    reason: str,
    url: httpx.URL,
    *,
    status: int | None = None,
    retry_after: float | None = None,
) -> TokenEndpointError:
    extra: dict[str, Any] = {"retry_after": retry_after} if kind is TokenEndpointUnavailable else {}
    error = kind(
        f"token endpoint {host}: {reason}",
        status=status,
        method="POST",
        url=safe_path(url),
        **extra,
    )
    error.endpoint = host
    return error
