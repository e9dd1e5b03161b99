"""The four Backend Services faults of issue #18, each pinned where a real provider cannot be
made to do it on demand: a token endpoint down for a window of the token's life, an
assertion lifetime, the error text and log event of a refusal, and the scope comparison."""

from __future__ import annotations

import json

import httpx
import jwt
import pytest
from test_fhir_auth import CLIENT_ID, PATIENT, TOKEN_URL, WallClock, make_keys

from alliance_fhir.exceptions import FatalError, RetriableError
from alliance_fhir.fhir import RetryPolicy, Secret, SmartBackendAuth
from alliance_fhir.fhir.scopes import missing_scopes, parse_scopes, uncovered_needs


class FlakyTokenEndpoint:
    """Issues 60 s tokens; while ``down`` it answers 503 (or refuses the connection)."""

    def __init__(self, *, refuse_connection: bool = False) -> None:
        self.down = False
        self.refuse_connection = refuse_connection
        self.issued = 0
        self.assertions: list[dict[str, object]] = []
        self.fhir_tokens: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            if self.down:
                if self.refuse_connection:
                    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
                return httpx.Response(503, json={"error": "temporarily_unavailable"})
            form = dict(httpx.QueryParams(request.content.decode()))
            self.assertions.append(
                jwt.decode(form["client_assertion"], options={"verify_signature": False})
            )
            self.issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"tok-{self.issued}",
                    "token_type": "Bearer",
                    "expires_in": 60,
                    "scope": "system/*.rs",
                },
            )
        self.fhir_tokens.append(request.headers["Authorization"])
        return httpx.Response(200, json=PATIENT, headers={"Content-Type": "application/fhir+json"})


def _auth(clock: WallClock, **kw: object) -> SmartBackendAuth:
    pem, _, _ = make_keys("ES384")
    return SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=Secret(pem),
        key_id="k1",
        scopes="system/*.rs",
        token_endpoint=TOKEN_URL,
        clock=clock,
        **kw,  # type: ignore[arg-type]  # test-only pass-through of keyword options
    )


@pytest.mark.parametrize("refuse_connection", [False, True])
def test_failed_early_refresh_keeps_the_valid_token_and_tries_again(
    make_client, log_output, refuse_connection: bool
) -> None:
    clock = WallClock()
    server = FlakyTokenEndpoint(refuse_connection=refuse_connection)
    client, _ = make_client(server.handler, auth=_auth(clock))
    start = clock.now
    # A 60 s token is renewed at half-life (+30 s); the endpoint is down from +25 s to +55 s.
    for second in range(0, 61):
        clock.now = start + second
        server.down = 25 <= second < 55
        client.read("Patient", "p1")
    assert len(server.fhir_tokens) == 61  # every request went out: the run did not abort
    assert server.fhir_tokens[54] == "Bearer tok-1"  # still the first token, still valid
    assert server.fhir_tokens[55] == "Bearer tok-2"  # renewed as soon as the endpoint is back
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    deferred = [e for e in events if e["event"] == "fhir.token_refresh_deferred"]
    assert 2 <= len(deferred) <= 10  # tried again later, not on every request
    assert all(e["endpoint"] == "auth.example.org" for e in deferred)
    assert all(e["error"].startswith("token endpoint auth.example.org: ") for e in deferred)


def test_a_token_at_its_end_is_not_used_when_renewal_fails(make_client) -> None:
    clock = WallClock()
    server = FlakyTokenEndpoint()
    client, _ = make_client(
        server.handler,
        auth=_auth(clock),
        retry=RetryPolicy(max_attempts=1),
    )
    start = clock.now
    client.read("Patient", "p1")
    clock.now = start + 58  # past the 57 s end of use (60 s minus a 3 s margin)
    server.down = True
    with pytest.raises(RetriableError, match=r"^token endpoint auth.example.org: "):
        client.read("Patient", "p1")
    assert server.fhir_tokens == ["Bearer tok-1"]


def test_assertion_expires_240_seconds_after_it_is_issued(make_client) -> None:
    clock = WallClock()
    server = FlakyTokenEndpoint()
    client, _ = make_client(server.handler, auth=_auth(clock))
    client.read("Patient", "p1")
    claims = server.assertions[0]
    assert int(str(claims["exp"])) - int(str(claims["iat"])) == 240


def test_token_endpoint_refusal_names_the_endpoint_and_the_reason(make_client, log_output) -> None:
    pem, _, _ = make_keys("RS384")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400,
            json={"error": "invalid_client", "error_description": "client authentication failed"},
        )

    auth = SmartBackendAuth(
        client_id=CLIENT_ID,
        private_key=Secret(pem),
        key_id="k",
        scopes="system/*.rs",
        token_endpoint=TOKEN_URL,
    )
    client, _ = make_client(handler, auth=auth)
    with pytest.raises(FatalError) as caught:
        client.read("Patient", "p1")
    assert str(caught.value) == (
        "token endpoint auth.example.org: invalid_client client authentication failed (HTTP 400)"
    )
    assert caught.value.status == 401  # our credentials were refused: exit code 4
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    refused = [e for e in events if e["event"] == "fhir.token_refused"]
    assert refused == [
        {
            **refused[0],
            "endpoint": "auth.example.org",
            "status": 400,
            "error": "invalid_client",
            "reason": "client authentication failed",
        }
    ]
    # Not attributed to the FHIR read that needed the token, and no assertion in the log.
    assert not any(e["event"] == "fhir.request" for e in events)
    assert "eyJ" not in log_output.getvalue()


def test_token_endpoint_outage_retries_are_logged_as_the_token_endpoint(
    make_client, log_output
) -> None:
    clock = WallClock()
    server = FlakyTokenEndpoint()
    server.down = True
    client, _ = make_client(server.handler, auth=_auth(clock))
    with pytest.raises(RetriableError):
        client.read("Patient", "p1")
    events = [json.loads(line) for line in log_output.getvalue().splitlines()]
    retries = [e for e in events if e["event"] in ("fhir.retry", "fhir.token_retry")]
    assert retries
    assert {e["event"] for e in retries} == {"fhir.token_retry"}
    assert all(e["endpoint"] == "auth.example.org" for e in retries)
    assert all("interaction" not in e for e in retries)


@pytest.mark.parametrize(
    ("requested", "granted", "missing"),
    [
        ("system/*.rs system/*.cud", "system/*.rs system/*.cud", []),
        ("system/*.rs system/*.cud", "system/*.cruds", []),
        ("system/*.rs system/*.cud", "system/*.read system/*.write", []),
        ("system/*.rs system/*.cud", "system/*.rs", ["system/*.cud"]),
        ("system/*.rs system/*.cud", "", ["system/*.rs", "system/*.cud"]),
        ("system/Goal.cu", "system/Patient.cruds", ["system/Goal.cu"]),
        ("system/*.rs", "patient/*.rs", ["system/*.rs"]),
        ("system/*.cud", "system/*.cu", ["system/*.d"]),
    ],
)
def test_missing_scopes(requested: str, granted: str, missing: list[str]) -> None:
    assert missing_scopes(requested, granted) == missing


def test_what_sync_lacks_is_named_per_type_or_once_for_all() -> None:
    needs = {"Goal": "crus", "Patient": "rs"}
    assert uncovered_needs(needs, "system/*.rs") == ["system/Goal.cu"]
    assert uncovered_needs(needs, "system/Goal.cruds system/Patient.r") == ["system/Patient.s"]
    assert uncovered_needs({"Goal": "crus", "Task": "crus"}, "") == ["system/*.crus"]
    assert uncovered_needs({"Goal": "crus", "Patient": "rs"}, "") == ["system/*.crus"]
    assert uncovered_needs({"Goal": "crus", "Task": "crus", "Patient": "rs"}, "system/*.rs") == [
        "system/*.cu"
    ]
    assert uncovered_needs(needs, "system/*.cruds") == []


def test_parse_scopes_skips_non_resource_scopes_and_queries() -> None:
    parsed = parse_scopes("openid fhirUser launch patient/Observation.rs?category=x user/*.*")
    assert [str(s) for s in parsed] == ["patient/Observation.rs", "user/*.cruds"]
