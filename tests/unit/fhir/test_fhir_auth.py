"""Auth flows: a SMART token endpoint that really verifies our signed assertion, token reuse
and renewal, and secrets that never show up in repr() or the logs."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhirkit import fhir_json

from alliance_fhir.exceptions import ConfigError, FatalError
from alliance_fhir.fhir import BasicAuth, BearerTokenAuth, Secret, SmartBackendAuth

TOKEN_URL = "https://auth.example.org/oauth2/token"
CLIENT_ID = "alliance-sync-client"
PATIENT = {"resourceType": "Patient", "id": "p1"}


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class WallClock:
    """Wall-clock epoch seconds that tests move forward by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class SmartServer:
    """FHIR server + SMART discovery + token endpoint, all behind one MockTransport handler."""

    def __init__(self, public_key: object, algorithm: str, clock: WallClock) -> None:
        self.clock = clock
        self.public_key = public_key
        self.algorithm = algorithm
        self.issued: list[str] = []
        self.jtis: set[str] = set()
        self.revoked: set[str] = set()
        self.reject_all = False
        self.fhir_auth_headers: list[str | None] = []
        self.token_requests = 0
        self.lock = threading.Lock()

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/fhir/.well-known/smart-configuration":
            assert "Authorization" not in request.headers
            return httpx.Response(
                200,
                json={
                    "token_endpoint": TOKEN_URL,
                    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                },
            )
        if str(request.url) == TOKEN_URL:
            return self.token(request)
        with self.lock:
            self.fhir_auth_headers.append(request.headers.get("Authorization"))
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if token not in self.issued or token in self.revoked or self.reject_all:
            return fhir_json(401)
        if request.url.path == "/fhir/Patient":
            return fhir_json(200, {"resourceType": "Bundle", "entry": [{"resource": PATIENT}]})
        return fhir_json(200, PATIENT)

    def token(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert "Authorization" not in request.headers
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        assert form["grant_type"] == "client_credentials"
        assert form["scope"] == "system/Patient.rs system/Goal.cud"
        assert form["client_assertion_type"] == (
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        )
        assertion = form["client_assertion"]
        header = jwt.get_unverified_header(assertion)
        assert header["alg"] == self.algorithm
        assert header["kid"] == "key-2024"
        claims = jwt.decode(
            assertion,
            self.public_key,  # type: ignore[arg-type]
            algorithms=[self.algorithm],
            audience=TOKEN_URL,
            # Time claims are checked below against the injected clock, not the real one.
            options={
                "require": ["exp", "iss", "sub", "aud", "jti"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
        assert claims["iss"] == claims["sub"] == CLIENT_ID
        assert claims["iat"] <= self.clock.now < claims["exp"] <= self.clock.now + 300
        with self.lock:
            assert claims["jti"] not in self.jtis, "jti must never repeat"
            self.jtis.add(claims["jti"])
            self.token_requests += 1
            token = f"access-token-{self.token_requests}-s3cr3tvalue"
            self.issued.append(token)
        return httpx.Response(
            200,
            json={
                "access_token": token,
                "token_type": "bearer",
                "expires_in": 300,
                "scope": form["scope"],
            },
        )


def make_keys(kind: str) -> tuple[str, object, str]:
    if kind == "RS384":
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    return pem_of(key), key.public_key(), kind


@pytest.fixture(params=["RS384", "ES384"])
def smart(request: pytest.FixtureRequest, make_client):
    pem, public, alg = make_keys(request.param)
    clock = WallClock()
    server = SmartServer(public, alg, clock)
    auth = SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=Secret(pem),
        key_id="key-2024",
        scopes=["system/Patient.rs", "system/Goal.cud"],
        clock=clock,
    )
    client, rec = make_client(server.handler, auth=auth)
    return client, rec, server, clock, auth, pem


def test_smart_token_is_obtained_verified_and_reused(smart) -> None:
    client, rec, server, _, auth, _ = smart
    assert client.read("Patient", "p1").resource == PATIENT
    assert client.read("Patient", "p1").resource == PATIENT
    assert server.token_requests == 1
    assert server.fhir_auth_headers == [f"Bearer {server.issued[0]}"] * 2
    assert auth.algorithm == server.algorithm
    paths = [r.url.path for r in rec.requests]
    assert paths[:2] == ["/fhir/.well-known/smart-configuration", "/oauth2/token"]


def test_smart_token_is_refreshed_before_expiry(smart) -> None:
    client, _, server, clock, _, _ = smart
    client.read("Patient", "p1")
    clock.now += 200  # 100 s left: still outside the 60 s skew
    client.read("Patient", "p1")
    assert server.token_requests == 1
    clock.now += 50  # 50 s left: inside the skew, renew first
    client.read("Patient", "p1")
    assert server.token_requests == 2
    assert server.fhir_auth_headers[-1] == f"Bearer {server.issued[1]}"


def test_401_triggers_exactly_one_refresh(smart) -> None:
    client, _, server, _, _, _ = smart
    client.read("Patient", "p1")
    server.revoked.add(server.issued[0])  # server-side revocation: our cache still thinks it valid
    assert client.read("Patient", "p1").resource == PATIENT
    assert server.token_requests == 2
    assert server.fhir_auth_headers[-2:] == [
        f"Bearer {server.issued[0]}",
        f"Bearer {server.issued[1]}",
    ]


def test_persistent_401_is_fatal_after_one_refresh(smart) -> None:
    client, _, server, _, _, _ = smart
    client.read("Patient", "p1")
    server.reject_all = True  # e.g. the client's access was withdrawn
    with pytest.raises(FatalError) as err:
        client.read("Patient", "p1")
    assert err.value.status == 401
    assert server.token_requests == 2


def test_threads_share_one_token(smart) -> None:
    client, _, server, _, _, _ = smart
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                client.read("Patient", "p1")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert server.token_requests == 1
    assert len(server.fhir_auth_headers) == 40


def test_secrets_stay_out_of_repr_and_logs(smart, log_output) -> None:
    client, _, server, clock, auth, pem = smart
    client.read("Patient", "p1")
    clock.now += 280
    next(client.search("Patient", {"identifier": "http://hospital/mrn|MRN-778899"}))
    output = log_output.getvalue()
    events = [json.loads(line) for line in output.splitlines()]
    assert any(e["event"] == "fhir.token_obtained" for e in events)
    assert any(e["event"] == "fhir.request" and e["status"] == 200 for e in events)
    pem_lines = [ln for ln in pem.splitlines() if "-----" not in ln]
    for token in server.issued:
        assert token not in output
    for line in pem_lines:
        assert line not in output
    assert "MRN-778899" not in output  # the query string is never logged
    assert "eyJ" not in output  # no JWT (assertion) either
    for shown in (repr(auth), str(auth), repr(client), repr(Secret(pem))):
        assert not any(line in shown for line in pem_lines)
        assert "s3cr3tvalue" not in shown


def test_static_auth_reprs_hide_secrets() -> None:
    basic = BasicAuth("svc-user", Secret("hunter2-password"))
    bearer = BearerTokenAuth(Secret("static-bearer-xyz"))
    assert "hunter2" not in repr(basic)
    assert "svc-user" in repr(basic)
    assert "static-bearer-xyz" not in repr(bearer)
    assert "static-bearer-xyz" not in repr(Secret("static-bearer-xyz"))


def test_basic_auth_header(make_client) -> None:
    client, rec = make_client(
        lambda r: fhir_json(200, PATIENT), auth=BasicAuth("u", Secret("pass-word"))
    )
    client.read("Patient", "p1")
    assert rec.requests[0].headers["Authorization"] == "Basic dTpwYXNzLXdvcmQ="


def test_secret_from_env_and_file(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("ALLIANCE_TEST_SECRET", "from-the-env\n")
    assert Secret.from_env("ALLIANCE_TEST_SECRET").reveal() == "from-the-env"
    assert "ALLIANCE_TEST_SECRET" in repr(Secret.from_env("ALLIANCE_TEST_SECRET"))
    monkeypatch.delenv("ALLIANCE_TEST_SECRET")
    with pytest.raises(ConfigError):
        Secret.from_env("ALLIANCE_TEST_SECRET")
    path = tmp_path / "token"
    path.write_text("from-the-file\n")
    path.chmod(0o600)
    assert Secret.from_file(path).reveal() == "from-the-file"
    with pytest.raises(ConfigError):
        Secret.from_file(tmp_path / "missing")


def test_explicit_token_endpoint_skips_discovery(make_client) -> None:
    pem, public, alg = make_keys("ES384")
    server = SmartServer(public, alg, WallClock())
    auth = SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=Secret(pem),
        key_id="key-2024",
        scopes="system/Patient.rs system/Goal.cud",
        token_endpoint=TOKEN_URL,
    )
    client, rec = make_client(server.handler, auth=auth)
    client.read("Patient", "p1")
    assert [r.url.path for r in rec.requests] == ["/oauth2/token", "/fhir/Patient/p1"]


def test_bad_keys_and_settings_are_config_errors() -> None:
    # A deliberately weak key: the point is that we refuse it.
    small = pem_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505
    p256 = pem_of(ec.generate_private_key(ec.SECP256R1()))
    good = pem_of(ec.generate_private_key(ec.SECP384R1()))
    base = {"client_id": "c", "key_id": "k", "scopes": "system/*.rs"}
    with pytest.raises(ConfigError):
        SmartBackendAuth(private_key=Secret(small), **base)
    with pytest.raises(ConfigError):
        SmartBackendAuth(private_key=Secret(p256), **base)
    with pytest.raises(ConfigError):
        SmartBackendAuth(private_key=Secret("not a key at all"), **base)
    with pytest.raises(ConfigError):
        SmartBackendAuth(private_key=Secret(good), algorithm="RS384", **base)
    with pytest.raises(ConfigError):
        SmartBackendAuth(private_key=Secret(good), assertion_lifetime=600, **base)


def test_token_endpoint_refusal_is_fatal(make_client) -> None:
    pem, _, _ = make_keys("ES384")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client"})

    auth = SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=Secret(pem),
        key_id="k",
        scopes="system/*.rs",
        token_endpoint=TOKEN_URL,
    )
    client, rec = make_client(handler, auth=auth)
    with pytest.raises(FatalError, match="invalid_client"):
        client.read("Patient", "p1")
    assert len(rec.requests) == 1  # the FHIR server never saw a request
