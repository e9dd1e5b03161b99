"""Who may call the CDS service: the EHR's signed JWT, checked as CDS Hooks 2.0 asks.

Every call carries ``Authorization: Bearer <JWT>`` signed by the EHR. It is accepted only when:

* its ``iss`` is one of ``cds_issuers`` (the clinic's configuration, never the token's say);
* its ``alg`` is RS384 or ES384 (the algorithms the specification names; never ``none`` or
  an HMAC one a public key could be abused for) and it names its key (``kid``);
* the key comes from the issuer's configured ``jwks_url``, or from the ``jku`` header when
  that exact URL is on the issuer's ``jku`` list; JWKS are fetched over https (plain http to
  loopback only with ``cds_allow_loopback_http``, for tests), never following redirects, and
  cached for :data:`JWKS_TTL` seconds (an unknown ``kid`` refetches, at most every
  :data:`JWKS_MIN_REFRESH` seconds, so key rotation works and a flood of forged kids does
  not hammer the EHR);
* the signature holds, ``aud`` is the URL of the endpoint called, ``exp`` is in the future
  and at most :data:`MAX_LIFETIME` seconds away, ``iat`` is not in the future (each with
  :data:`LEEWAY` seconds of clock skew), and its ``jti`` was not seen before from that
  issuer (a bounded in-memory cache, per process, kept until the token expires).

Anything else is a :class:`JwtRefused` (HTTP 401). Its reason is a short phrase for the log;
the token itself is never logged.
"""

from __future__ import annotations

import heapq
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt

from alliance_fhir.config import CdsIssuer, Settings
from alliance_fhir.net import is_loopback

__all__ = [
    "ALGORITHMS",
    "JWKS_MIN_REFRESH",
    "JWKS_TTL",
    "LEEWAY",
    "MAX_LIFETIME",
    "JwksCache",
    "JwtRefused",
    "JwtVerifier",
    "ReplayCache",
]

#: Signing algorithms accepted (CDS Hooks 2.0: ES384 and RS384).
ALGORITHMS: Final = frozenset({"RS384", "ES384"})
#: Clock skew allowed on ``exp`` and ``iat`` (seconds).
LEEWAY: Final = 30
#: The longest a token may still be valid for: longer-lived tokens would have to be
#: remembered longer to refuse their replay (the specification advises 5 minutes).
MAX_LIFETIME: Final = 300
JWKS_TTL: Final = 300.0
JWKS_MIN_REFRESH: Final = 30.0
#: The largest JWKS document read (bytes).
JWKS_MAX_BYTES: Final = 256 * 1024
#: The most ``jti`` values remembered at once.
REPLAY_CAPACITY: Final = 100_000


class JwtRefused(Exception):
    """The request's JWT is not acceptable; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Keys:
    keys: dict[str, jwt.PyJWK]
    fetched: float


class JwksCache:
    """JWK Sets by URL, fetched on first use and cached (thread-safe).

    ``get`` is the seam: ``(url) -> JWKS JSON bytes``; by default an httpx GET with the
    configured TLS verification.
    """

    def __init__(
        self,
        *,
        allow_loopback_http: bool = False,
        verify: bool | str = True,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        get: Callable[[str], bytes] | None = None,
    ) -> None:
        self._allow_http = allow_loopback_http
        self._verify = verify
        self._timeout = timeout
        self._clock = clock
        self._get = get or self._http_get
        self._lock = threading.Lock()
        self._cache: dict[str, _Keys] = {}

    def _http_get(self, url: str) -> bytes:
        with (
            httpx.Client(timeout=self._timeout, verify=self._verify) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise JwtRefused(f"JWKS fetch answered HTTP {resp.status_code}")
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise JwtRefused("JWKS document too large")
            return body

    def _check_url(self, url: str) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise JwtRefused("JWKS URL is not a valid URL") from exc
        if parsed.scheme == "https" and parsed.host:
            return
        if parsed.scheme == "http" and self._allow_http and is_loopback(parsed.host):
            return
        raise JwtRefused("JWKS URL must be https://")

    def _fetch(self, url: str) -> dict[str, jwt.PyJWK]:
        self._check_url(url)
        try:
            document = json.loads(self._get(url))
            keyset = jwt.PyJWKSet.from_dict(document)
        except JwtRefused:
            raise
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            raise JwtRefused(f"JWKS unusable ({type(exc).__name__})") from exc
        return {k.key_id: k for k in keyset.keys if k.key_id}

    def key(self, url: str, kid: str) -> jwt.PyJWK:
        """The key ``kid`` of the JWKS at ``url`` (refetched once when unknown)."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(url)
        fresh = cached is not None and now - cached.fetched < JWKS_TTL
        if cached is not None and fresh and kid in cached.keys:
            return cached.keys[kid]
        if cached is not None and fresh and now - cached.fetched < JWKS_MIN_REFRESH:
            raise JwtRefused("unknown kid")
        keys = self._fetch(url)
        with self._lock:
            self._cache[url] = _Keys(keys, now)
        if kid not in keys:
            raise JwtRefused("unknown kid")
        return keys[kid]


class ReplayCache:
    """``(iss, jti)`` pairs seen, each kept until its token expires (thread-safe, bounded:
    when full, the pairs closest to expiry are forgotten first)."""

    def __init__(
        self, capacity: int = REPLAY_CAPACITY, clock: Callable[[], float] = time.time
    ) -> None:
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._expiry: list[tuple[float, tuple[str, str]]] = []

    def first_use(self, iss: str, jti: str, until: float) -> bool:
        """Remember ``(iss, jti)`` until ``until``; False when it was already seen."""
        now = self._clock()
        key = (iss, jti)
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                self._seen.pop(heapq.heappop(self._expiry)[1], None)
            if key in self._seen:
                return False
            while self._expiry and len(self._seen) >= self._capacity:
                self._seen.pop(heapq.heappop(self._expiry)[1], None)
            self._seen[key] = until
            heapq.heappush(self._expiry, (until, key))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


class JwtVerifier:
    """Checks the ``Authorization`` header of one CDS call (see the module docstring)."""

    def __init__(
        self,
        issuers: Mapping[str, CdsIssuer],
        *,
        jwks: JwksCache,
        replay: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = dict(issuers)
        self._jwks = jwks
        self._replay = replay or ReplayCache(clock=clock)
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier:
        verify: bool | str = settings.verify_tls
        if settings.verify_tls and settings.ca_bundle is not None:
            verify = str(settings.ca_bundle)
        jwks = JwksCache(
            allow_loopback_http=settings.cds_allow_loopback_http,
            verify=verify,
            timeout=settings.cds_fetch_timeout_seconds,
        )
        return cls(settings.cds_issuers, jwks=jwks)

    def issuer(self, iss: str) -> CdsIssuer | None:
        return self._issuers.get(iss)

    def verify(self, authorization: str | None, audience: str | Sequence[str]) -> dict[str, Any]:
        """The verified claims of the bearer JWT in ``authorization``; JwtRefused otherwise.
        ``audience``: the URL(s) of the endpoint called."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise JwtRefused("no bearer token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise JwtRefused("not a JWT") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALGORITHMS:
            raise JwtRefused("signing algorithm not accepted")
        if not isinstance(kid, str) or not kid:
            raise JwtRefused("no kid")
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None or not isinstance(iss, str):
            raise JwtRefused("issuer not trusted")
        jku = header.get("jku")
        if jku is not None:
            if jku not in issuer.jku:
                raise JwtRefused("jku not on the issuer's list")
            url = str(jku)
        elif issuer.jwks_url:
            url = issuer.jwks_url
        else:
            raise JwtRefused("no JWKS for this issuer")
        key = self._jwks.key(url, kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=list(audience) if not isinstance(audience, str) else audience,
                issuer=iss,
                leeway=LEEWAY,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise JwtRefused("expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise JwtRefused("wrong aud") from exc
        except jwt.ImmatureSignatureError as exc:
            raise JwtRefused("issued in the future") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise JwtRefused(f"no {exc.claim}") from exc
        except jwt.PyJWTError as exc:
            raise JwtRefused(f"invalid ({type(exc).__name__})") from exc
        now = self._clock()
        exp = float(claims["exp"])
        if exp > now + MAX_LIFETIME + LEEWAY:
            raise JwtRefused("lives too long")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise JwtRefused("no jti")
        if not self._replay.first_use(iss, jti, exp + LEEWAY):
            raise JwtRefused("replayed jti")
        return claims
