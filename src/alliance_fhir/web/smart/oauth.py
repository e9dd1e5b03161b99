"""The OAuth 2.0 side of SMART App Launch (v2) for a public client: the issuer allow-list,
discovery, PKCE (S256), the authorize URL and the code exchange.

``iss`` comes from whoever sent the browser to ``/launch``: it is checked against the
configured servers *before* anything is fetched, so the app never follows an unknown iss
(no request to an attacker's host, no token sent to it). Errors are :class:`LaunchError`
with a message fit for the page (no token, no code, no patient data) and the HTTP status
the page is sent with.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from alliance_fhir.net import is_loopback

__all__ = [
    "Endpoints",
    "LaunchError",
    "TokenGrant",
    "allowed_issuer",
    "authorize_url",
    "discover",
    "exchange_code",
    "new_state",
    "pkce_pair",
]

_TIMEOUT = 10.0


class LaunchError(Exception):
    """The launch cannot go on; ``message`` is shown to the clinician, ``status`` is the
    page's HTTP status, ``reason`` a short code for the log."""

    def __init__(self, message: str, *, status: int = 400, reason: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Endpoints:
    """What ``.well-known/smart-configuration`` tells us."""

    authorize: str
    token: str


@dataclass(frozen=True)
class TokenGrant:
    """The token response, reduced to what the view keeps."""

    access_token: str
    expires_in: float | None
    scopes: frozenset[str]
    patient: str | None


def _norm(url: str) -> str:
    return url.strip().rstrip("/")


def allowed_issuer(iss: str | None, allowed: Iterable[str]) -> str:
    """``iss`` as configured when it is one of the ``allowed`` FHIR base URLs (exact match,
    trailing slash aside); else LaunchError. Nothing is fetched before this says yes."""
    if not iss:
        raise LaunchError("The launch did not say which FHIR server it comes from (iss).")
    wanted = _norm(iss)
    for server in allowed:
        if _norm(server) == wanted:
            return _norm(server)
    raise LaunchError(
        "This FHIR server is not one this app is configured to work with; nothing was "
        "requested from it. Ask the clinic's administrator to add it (smart_app_issuers).",
        reason="unknown_iss",
    )


def new_state() -> str:
    """An unguessable ``state`` (256 bits)."""
    return secrets.token_urlsafe(32)


def pkce_pair() -> tuple[str, str]:
    """``(verifier, challenge)`` for PKCE S256 (RFC 7636): a 43-character verifier and the
    base64url SHA-256 of it, without padding."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return verifier, challenge


def _endpoint(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise LaunchError(f"The FHIR server's SMART configuration has no usable {key}.")
    url = httpx.URL(value)
    if url.scheme == "http" and not is_loopback(url.host):
        raise LaunchError(f"The FHIR server's {key} is not https.", reason="insecure_endpoint")
    return value


def discover(client: httpx.Client, iss: str) -> Endpoints:
    """Read ``<iss>/.well-known/smart-configuration``; it must name the authorize and token
    endpoints and, when it lists PKCE methods, offer S256."""
    try:
        response = client.get(
            f"{iss}/.well-known/smart-configuration",
            headers={"Accept": "application/json"},
            timeout=_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise LaunchError(
            "The FHIR server could not be reached to start the sign-in.",
            status=502,
            reason=f"discovery_{type(exc).__name__}",
        ) from exc
    if response.status_code != 200:
        raise LaunchError(
            "The FHIR server did not describe its sign-in (smart-configuration).",
            status=502,
            reason=f"discovery_http_{response.status_code}",
        )
    try:
        config = response.json()
    except ValueError as exc:
        raise LaunchError("The FHIR server's SMART configuration is not JSON.", status=502) from exc
    if not isinstance(config, dict):
        raise LaunchError("The FHIR server's SMART configuration is not an object.", status=502)
    methods = config.get("code_challenge_methods_supported")
    if isinstance(methods, list) and "S256" not in methods:
        raise LaunchError("The FHIR server's sign-in does not offer PKCE S256.", status=502)
    return Endpoints(
        authorize=_endpoint(config, "authorization_endpoint"),
        token=_endpoint(config, "token_endpoint"),
    )


def authorize_url(
    endpoints: Endpoints,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    challenge: str,
    aud: str,
    launch: str | None,
) -> str:
    """The authorization request (``launch`` only in an EHR launch)."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "aud": aud,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if launch:
        params["launch"] = launch
    sep = "&" if "?" in endpoints.authorize else "?"
    return f"{endpoints.authorize}{sep}{urlencode(params)}"


def exchange_code(
    client: httpx.Client,
    *,
    token_endpoint: str,
    code: str,
    verifier: str,
    redirect_uri: str,
    client_id: str,
) -> TokenGrant:
    """Redeem the authorization code (once: a replayed or expired code is refused by the
    server, and said so here without the server's words)."""
    try:
        response = client.post(
            token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
            },
            headers={"Accept": "application/json"},
            timeout=_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        raise LaunchError(
            "The sign-in server could not be reached to finish the sign-in.",
            status=502,
            reason=f"token_{type(exc).__name__}",
        ) from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.status_code != 200:
        error = body.get("error")
        code_text = error if isinstance(error, str) and error.isascii() and len(error) < 40 else ""
        raise LaunchError(
            "The sign-in server refused to complete the sign-in"
            + (f" ({code_text})" if code_text else "")
            + ". The link may have expired or been used already: launch the app again.",
            reason=f"token_{code_text or response.status_code}",
        )
    token = body.get("access_token")
    token_type = str(body.get("token_type") or "").lower()
    if not isinstance(token, str) or not token or token_type != "bearer":  # noqa: S105 - a token type name, not a secret
        raise LaunchError("The sign-in server sent no bearer access token.", status=502)
    expires = body.get("expires_in")
    patient = body.get("patient")
    scopes = body.get("scope")
    return TokenGrant(
        access_token=token,
        expires_in=float(expires) if isinstance(expires, int | float) and expires > 0 else None,
        scopes=frozenset(scopes.split()) if isinstance(scopes, str) else frozenset(),
        patient=patient if isinstance(patient, str) and patient else None,
    )
