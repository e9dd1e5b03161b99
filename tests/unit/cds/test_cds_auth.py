"""The EHR's JWT on every CDS call: signed with its RS384/ES384 key, fetched from its JWKS
over real loopback HTTP, for our endpoint, fresh, used once; 401 otherwise."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import structlog

from alliance_fhir import log as alog
from alliance_fhir.web.cds.auth import JwksCache, JwtRefused, JwtVerifier, ReplayCache

from . import cdskit as k
from .cdskit import TestClient


@pytest.fixture(scope="module", params=["RS384", "ES384"])
def key(request: pytest.FixtureRequest) -> k.EhrKey:
    return k.EhrKey.make(str(request.param))


@pytest.fixture
def jwks(key: k.EhrKey) -> Iterator[k.Jwks]:
    with k.serve_jwks(k.Jwks([key])) as served:
        yield served


@pytest.fixture
def cds(jwks: k.Jwks, tmp_path: Path) -> TestClient:
    return k.client(k.settings(jwks.url, tmp_path))


def _post(cds: TestClient, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = k.call("p9", prefetch=k.prefetch_for("p9", []))
    return cds.post("/cds-services/alliance-patient-view", json=body, headers=headers)


def test_a_request_signed_by_the_trusted_ehr_is_answered(cds: TestClient, key: k.EhrKey) -> None:
    resp = _post(cds, k.sign(key))
    assert resp.status_code == 200
    assert resp.json() == {"cards": []}


def test_the_aud_may_be_a_list_holding_our_endpoint(cds: TestClient, key: k.EhrKey) -> None:
    assert _post(cds, k.sign(key, aud=["https://other.example", k.SERVICE_URL])).status_code == 200


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda key: None, id="no-authorization"),
        pytest.param(lambda key: "not-a-jwt", id="garbage"),
        pytest.param(lambda key: k.sign(key, lifetime=-120), id="expired"),
        pytest.param(lambda key: k.sign(key, aud=f"{k.PUBLIC}/cds-services"), id="wrong-aud"),
        pytest.param(lambda key: k.sign(key, aud="https://evil.example/x"), id="foreign-aud"),
        pytest.param(lambda key: k.sign(key, iss="https://evil.example"), id="unknown-iss"),
        pytest.param(lambda key: k.sign(key, drop=["jti"]), id="no-jti"),
        pytest.param(lambda key: k.sign(key, drop=["exp"]), id="no-exp"),
        pytest.param(lambda key: k.sign(key, drop=["iat"]), id="no-iat"),
        pytest.param(lambda key: k.sign(key, lifetime=3600), id="lives-an-hour"),
        pytest.param(lambda key: k.sign(key, iat=time.time() + 600), id="issued-in-future"),
        pytest.param(lambda key: k.sign(k.EhrKey.make(key.alg, kid=key.kid)), id="other-key"),
        pytest.param(lambda key: k.sign(k.EhrKey.make(key.alg)), id="unknown-kid"),
        pytest.param(
            lambda key: k.sign(key, jku="http://127.0.0.1:9/evil-jwks.json"), id="jku-not-listed"
        ),
    ],
)
def test_a_bad_jwt_is_401(cds: TestClient, key: k.EhrKey, forge: Any) -> None:
    resp = _post(cds, forge(key))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert resp.json() == {"error": "unauthorized"}


def test_a_replayed_jwt_is_401(cds: TestClient, key: k.EhrKey) -> None:
    token = k.sign(key)
    assert [_post(cds, token).status_code, _post(cds, token).status_code] == [200, 401]
    # the same jti from a new token is a replay too
    assert (
        _post(
            cds, k.sign(key, jti=jwt.decode(token, options={"verify_signature": False})["jti"])
        ).status_code
        == 401
    )


def test_algorithms_other_than_rs384_and_es384_are_refused(cds: TestClient, jwks: k.Jwks) -> None:
    rs256 = k.EhrKey.make("RS384", kid="rs256")
    jwks.keys.append(rs256)
    assert _post(cds, k.sign(rs256, alg="RS256")).status_code == 401
    # an HMAC token "signed" with the public key text must never verify
    public_pem = rs256.jwk["n"]
    forged = jwt.encode(
        {
            "iss": k.ISSUER,
            "aud": k.SERVICE_URL,
            "exp": int(time.time()) + 60,
            "iat": int(time.time()),
            "jti": "h",
        },
        public_pem,
        algorithm="HS256",
        headers={"kid": "rs256"},
    )
    assert _post(cds, forged).status_code == 401
    assert _post(cds, k.sign(rs256)).status_code == 200


def test_jku_on_the_issuers_list_is_where_the_key_is_fetched(key: k.EhrKey, tmp_path: Path) -> None:
    with k.serve_jwks(k.Jwks([key])) as listed, k.serve_jwks(k.Jwks([])) as configured:
        cfg = k.settings(configured.url, tmp_path, issuer={"jku": [listed.url]})
        cds = k.client(cfg)
        assert _post(cds, k.sign(key, jku=listed.url)).status_code == 200
        assert _post(cds, k.sign(key)).status_code == 401  # not in the configured JWKS
    assert (listed.hits, configured.hits) == (1, 1)


def test_the_jwks_is_fetched_once_and_cached(cds: TestClient, key: k.EhrKey, jwks: k.Jwks) -> None:
    for _ in range(3):
        assert _post(cds, k.sign(key)).status_code == 200
    assert jwks.hits == 1


def test_plain_http_jwks_is_refused_unless_the_test_setting_allows_loopback(
    key: k.EhrKey, jwks: k.Jwks, tmp_path: Path
) -> None:
    cfg = k.settings(jwks.url, tmp_path, cds_allow_loopback_http=False)
    assert _post(k.client(cfg), k.sign(key)).status_code == 401
    assert jwks.hits == 0


def test_a_service_without_its_public_url_refuses_every_call(
    key: k.EhrKey, jwks: k.Jwks, tmp_path: Path
) -> None:
    cfg = k.settings(jwks.url, tmp_path, cds_public_url=None)
    assert _post(k.client(cfg), k.sign(key)).status_code == 401


def test_a_rotated_key_is_found_by_refetching_the_jwks(key: k.EhrKey, jwks: k.Jwks) -> None:
    now = [1000.0]
    cache = JwksCache(allow_loopback_http=True, clock=lambda: now[0])
    verifier = JwtVerifier(k.settings(jwks.url, Path("/nonexistent")).cds_issuers, jwks=cache)
    verifier.verify(f"Bearer {k.sign(key)}", k.SERVICE_URL)
    rotated = k.EhrKey.make(key.alg)
    jwks.keys.append(rotated)

    with pytest.raises(JwtRefused, match="unknown kid"):  # not refetched within 30 s
        verifier.verify(f"Bearer {k.sign(rotated)}", k.SERVICE_URL)
    now[0] += 31
    verifier.verify(f"Bearer {k.sign(rotated)}", k.SERVICE_URL)
    assert jwks.hits == 2


def test_the_replay_cache_is_bounded_and_forgets_expired_tokens() -> None:
    now = [0.0]
    cache = ReplayCache(capacity=3, clock=lambda: now[0])
    assert [cache.first_use("i", j, 10.0 + n) for n, j in enumerate("abc")] == [True] * 3
    assert cache.first_use("i", "a", 99.0) is False
    assert cache.first_use("i", "d", 50.0) is True  # full: the soonest to expire goes
    assert len(cache) == 3
    now[0] = 60.0
    assert cache.first_use("i", "e", 70.0) is True
    assert len(cache) == 1


def test_the_token_is_never_echoed_or_logged(cds: TestClient, key: k.EhrKey) -> None:
    stream = io.StringIO()
    saved = structlog.get_config()
    alog.configure(level="DEBUG", json=True, stream=stream)
    try:
        token = k.sign(key, aud="https://evil.example/x")
        resp = _post(cds, token)
    finally:
        structlog.configure(**saved)  # as before: other tests capture logs their own way
    logged = stream.getvalue()
    assert resp.status_code == 401
    assert token not in resp.text
    assert token not in logged
    assert token.split(".")[2] not in logged  # not even its signature
    refused = [json.loads(line) for line in logged.splitlines() if "cds.refused" in line]
    assert [(e["service"], e["reason"]) for e in refused] == [
        ("alliance-patient-view", "wrong aud")
    ]
