"""The test OpenID provider itself (issue #18): what the SMART tests rely on it to do.

Backend Services tokens are JWTs for the FHIR base, signed with the provider's JWKS and
verifiable offline; granted scopes are what was asked within what the client may have; an
EHR launch (code + PKCE S256, ``launch`` parameter) completes without a human and the
token response carries the patient, the user's ``fhirUser`` and an ``id_token``.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import httpx
import jwt
import pytest

from alliance_fhir.fhir import AuthContext, Secret, SmartBackendAuth

from .oidckit import EHR_LAUNCH_SCOPES, OidcProvider, TestKey

REDIRECT = "http://127.0.0.1:18429/callback"
KEYS = {
    "RS384": TestKey.generate("harness-rs", "RS384"),
    "ES384": TestKey.generate("harness-es", "ES384"),
}


@pytest.fixture(scope="module")
def provider(oidc_provider: OidcProvider) -> OidcProvider:
    oidc_provider.register_backend_client(
        "harness-backend", list(KEYS.values()), "system/Patient.rs system/Observation.cruds"
    )
    oidc_provider.register_launch_client("harness-app", [REDIRECT])
    oidc_provider.add_launch("launch-abc", patient="pat-42", user="test-clinician")
    oidc_provider.apply()
    return oidc_provider


def _verify(provider: OidcProvider, token: str) -> dict[str, object]:
    jwks = jwt.PyJWKClient(f"{provider.issuer}/jwks")
    key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["RS256"], audience=provider.resource)


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_backend_token_is_a_jwt_for_the_fhir_base(provider: OidcProvider, algorithm: str) -> None:
    key = KEYS[algorithm]
    auth = SmartBackendAuth(
        client_id="harness-backend",
        private_key=Secret(key.private_pem),
        key_id=key.kid,
        scopes="system/Patient.rs system/Goal.rs",
        token_endpoint=provider.token_endpoint,
        allow_insecure_http=True,
    )
    with httpx.Client() as http:
        header = auth.authorization(AuthContext(http=http, base_url=httpx.URL(provider.resource)))
    assert header is not None
    assert header.startswith("Bearer ")
    claims = _verify(provider, header.removeprefix("Bearer "))
    assert claims["iss"] == provider.issuer
    assert claims["client_id"] == "harness-backend"
    # Goal was asked for but is not this client's: granted is the intersection.
    assert claims["scope"] == "system/Patient.rs"
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == provider.access_token_ttl


def test_ehr_launch_completes_without_a_human(provider: OidcProvider) -> None:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    params = {
        "client_id": "harness-app",
        "response_type": "code",
        "redirect_uri": REDIRECT,
        "scope": EHR_LAUNCH_SCOPES,
        "state": "state-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "launch": "launch-abc",
        "aud": provider.resource,
    }
    with httpx.Client(base_url=provider.issuer) as http:
        response = http.get("/auth", params=params)
        for _ in range(6):
            location = response.headers["location"]
            if location.startswith(REDIRECT):
                break
            response = http.get(location)
        callback = httpx.URL(location)
        assert callback.params["state"] == "state-1"
        token = http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": callback.params["code"],
                "redirect_uri": REDIRECT,
                "client_id": "harness-app",
                "code_verifier": verifier,
            },
        )
    assert token.status_code == 200, token.text
    body = token.json()
    assert body["patient"] == "pat-42"
    assert body["scope"] == EHR_LAUNCH_SCOPES
    access = _verify(provider, body["access_token"])
    assert access["patient"] == "pat-42"
    identity = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert identity["fhirUser"] == "Practitioner/test-clinician"
    assert identity["exp"] > time.time()
