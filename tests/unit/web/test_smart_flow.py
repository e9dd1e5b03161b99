"""The SMART launch flow of the clinician view (#18), without a browser or a real server.

The EHR's discovery document and token endpoint are an in-process stand-in
(``httpx.MockTransport``): it checks what a real authorization server checks (the PKCE
verifier against the challenge, the redirect URI, one use per code) and records every
request, so the tests can say *nothing* was fetched. The FHIR side is a stub of
``ClinicianViews`` (the real one is exercised end to end against HAPI and oidc-provider).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from alliance_fhir import log as alog
from alliance_fhir.api.smart import AlertControl, PatientChoice
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConflictError, FatalError
from alliance_fhir.web.smart import SmartViews, views_routes
from alliance_fhir.web.smart.oauth import pkce_pair
from alliance_fhir.web.smart.sessions import COOKIE, SessionStore

ISS = "https://ehr.example/fhir"
APP = "http://127.0.0.1:18430"
TOKEN = "at-0123456789abcdef"


@dataclass
class FakeEhr:
    """Discovery + token endpoint of an EHR; ``patient`` goes in the token response."""

    patient: str | None = "123"
    scope: str = "launch openid fhirUser patient/*.rs patient/Task.u"
    requests: list[httpx.Request] = field(default_factory=list)
    challenges: dict[str, str] = field(default_factory=dict)  # code -> challenge
    used: set[str] = field(default_factory=set)

    def issue(self, authorize_url: str) -> tuple[str, str]:
        """What the authorization server does at /authorize: a code bound to the
        challenge; returns (code, state)."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        code = f"code-{len(self.challenges)}"
        self.challenges[code] = query["code_challenge"]
        return code, query["state"]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/.well-known/smart-configuration"):
            return httpx.Response(
                200,
                json={
                    "authorization_endpoint": "https://auth.example/authorize",
                    "token_endpoint": "https://auth.example/token",
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        if request.url.path == "/token":
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            code = form.get("code", "")
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if (
                code not in self.challenges
                or code in self.used
                or self.challenges[code] != challenge
                or form.get("redirect_uri") != f"{APP}/callback"
            ):
                return httpx.Response(400, json={"error": "invalid_grant"})
            self.used.add(code)
            body: dict[str, Any] = {
                "access_token": TOKEN,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": self.scope,
            }
            if self.patient:
                body["patient"] = self.patient
            return httpx.Response(200, json=body)
        return httpx.Response(404)


@dataclass
class StubViews:
    """Stands in for ``ClinicianViews``: records calls, renders a tiny page."""

    calls: list[tuple[str, ...]] = field(default_factory=list)
    conflict: bool = False
    refuse: int | None = None

    def page_html(self, iss: str, token: str, patient: str, *, controls: Any, notice: str) -> str:
        self.calls.append(("page", iss, token, patient))
        if self.refuse:
            raise FatalError("refused", status=self.refuse)
        control = controls(AlertControl("t1", "3", "requested", None))
        return f"<html><body>{notice}<p>report of {patient}</p>{control}</body></html>"

    def patients(self, iss: str, token: str) -> list[PatientChoice]:
        self.calls.append(("patients", iss, token))
        return [PatientChoice("123", "Test Person", None)]

    def acknowledge(self, iss: str, token: str, patient: str, task: str, version: str | None):  # type: ignore[no-untyped-def]  # a stub
        self.calls.append(("acknowledge", patient, task, version or ""))
        if self.conflict:
            raise ConflictError("412", status=412)

    mark_discussed = acknowledge


def _settings(**extra: Any) -> Settings:
    return Settings(
        smart_app_client_id="clinician-view",
        smart_app_issuers=[ISS],
        smart_app_url=APP,
        **extra,
    )


@pytest.fixture
def ehr() -> FakeEhr:
    return FakeEhr()


@pytest.fixture
def views(ehr: FakeEhr) -> Iterator[SmartViews]:
    smart = SmartViews(_settings(), transport=httpx.MockTransport(ehr.handle))
    smart.views = StubViews()  # type: ignore[assignment]  # the FHIR side is stubbed here
    yield smart
    smart.close()


@pytest.fixture
def browser(views: SmartViews) -> Iterator[TestClient]:
    with TestClient(
        Starlette(routes=views_routes(views)), base_url=APP, follow_redirects=False
    ) as client:
        yield client


def _launch(browser: TestClient) -> httpx.Response:
    return browser.get("/launch", params={"iss": ISS, "launch": "launch-abc"})


def _sign_in(browser: TestClient, ehr: FakeEhr) -> httpx.Response:
    code, state = ehr.issue(_launch(browser).headers["location"])
    return browser.get("/callback", params={"code": code, "state": state})


def _csrf(page: str) -> str:
    return page.split('name="csrf" value="', 1)[1].split('"', 1)[0]


def test_an_unknown_iss_is_refused_before_any_request(browser: TestClient, ehr: FakeEhr) -> None:
    for iss in ("https://evil.example/fhir", "https://ehr.example/fhir/other", ""):
        response = browser.get("/launch", params={"iss": iss, "launch": "x"})
        assert response.status_code == 400
        assert "not one this app is configured to work with" in response.text or not iss
        assert COOKIE not in response.cookies
    assert ehr.requests == []


def test_ehr_launch_redirects_to_authorize_with_pkce_state_aud_and_the_scopes(
    browser: TestClient, ehr: FakeEhr
) -> None:
    response = _launch(browser)

    assert response.status_code == 302
    url = urlsplit(response.headers["location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == "https://auth.example/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["response_type"] == "code"
    assert query["client_id"] == "clinician-view"
    assert query["redirect_uri"] == f"{APP}/callback"
    assert query["scope"] == "launch openid fhirUser patient/*.rs patient/Task.u"
    assert query["aud"] == ISS
    assert query["launch"] == "launch-abc"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) == 43
    assert len(query["state"]) >= 43
    assert [str(r.url) for r in ehr.requests] == [f"{ISS}/.well-known/smart-configuration"]


def test_pkce_challenge_is_the_s256_of_the_verifier() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


def test_session_cookie_is_httponly_lax_and_secure_except_on_loopback(
    views: SmartViews,
) -> None:
    app = Starlette(routes=views_routes(views))
    for base, secure in ((APP, False), ("https://clinic.example", True)):
        with TestClient(app, base_url=base, follow_redirects=False) as client:
            cookie = client.get("/launch", params={"iss": ISS, "launch": "x"}).headers["set-cookie"]
        flags = [part.strip().lower() for part in cookie.split(";")]
        assert "httponly" in flags
        assert "samesite=lax" in flags
        assert ("secure" in flags) is secure
        assert "path=/" in flags


def test_the_callback_redeems_the_code_and_shows_the_patient_in_context(
    browser: TestClient, ehr: FakeEhr, views: SmartViews
) -> None:
    signed_in = _sign_in(browser, ehr)

    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/clinician"
    page = browser.get("/clinician")
    assert page.status_code == 200
    assert "report of 123" in page.text
    assert TOKEN not in page.text
    assert TOKEN not in signed_in.headers.get("set-cookie", "")
    assert page.headers["cache-control"] == "no-store"
    assert "script-src" not in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert views.views.calls[0] == ("page", ISS, TOKEN, "123")  # type: ignore[attr-defined]


def _launch_url(browser: TestClient) -> str:
    return str(_launch(browser).headers["location"])


def test_sign_in_rotates_the_session_id(browser: TestClient, ehr: FakeEhr) -> None:
    launched = _launch(browser)
    before = launched.cookies[COOKIE]
    code, state = ehr.issue(launched.headers["location"])
    after = browser.get("/callback", params={"code": code, "state": state}).cookies[COOKIE]
    assert after != before
    browser.cookies.set(COOKIE, before)
    assert browser.get("/clinician").status_code == 401


def test_a_forged_state_is_refused_and_the_code_is_never_redeemed(
    browser: TestClient, ehr: FakeEhr
) -> None:
    code, _state = ehr.issue(_launch_url(browser))
    response = browser.get("/callback", params={"code": code, "state": "forged"})
    assert response.status_code == 400
    assert "state does not match" in response.text
    assert not any(r.url.path == "/token" for r in ehr.requests)
    assert browser.get("/clinician").status_code == 401


def test_a_callback_without_a_launch_here_is_refused(browser: TestClient) -> None:
    response = browser.get("/callback", params={"code": "c", "state": "s"})
    assert response.status_code == 400
    assert "not started here" in response.text


def test_a_replayed_callback_is_refused(browser: TestClient, ehr: FakeEhr) -> None:
    code, state = ehr.issue(_launch_url(browser))
    assert browser.get("/callback", params={"code": code, "state": state}).status_code == 303
    again = browser.get("/callback", params={"code": code, "state": state})
    assert again.status_code == 400


def test_a_code_the_server_refuses_ends_the_launch(browser: TestClient, ehr: FakeEhr) -> None:
    _code, state = ehr.issue(_launch_url(browser))
    response = browser.get("/callback", params={"code": "expired-code", "state": state})
    assert response.status_code == 400
    assert "(invalid_grant)" in response.text
    assert "launch the app again" in response.text
    assert browser.get("/clinician").status_code == 401


def test_writes_need_the_sessions_csrf_token_and_our_origin(
    browser: TestClient, ehr: FakeEhr, views: SmartViews
) -> None:
    _sign_in(browser, ehr)
    csrf = _csrf(browser.get("/clinician").text)
    stub: StubViews = views.views  # type: ignore[assignment]

    form = {"task": "t1", "version": "3"}
    assert browser.post("/clinician/acknowledge", data=form).status_code == 403
    bad = {**form, "csrf": "x" * len(csrf)}
    assert browser.post("/clinician/acknowledge", data=bad).status_code == 403
    cross = browser.post(
        "/clinician/acknowledge",
        data={**form, "csrf": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert not any(c[0] == "acknowledge" for c in stub.calls)

    done = browser.post(
        "/clinician/acknowledge", data={**form, "csrf": csrf}, headers={"Origin": APP}
    )
    assert done.status_code == 303
    assert ("acknowledge", "123", "t1", "3") in stub.calls
    assert "Alert acknowledged." in browser.get("/clinician").text
    assert "Alert acknowledged." not in browser.get("/clinician").text  # shown once


def test_a_conflict_is_shown_as_changed_meanwhile(
    browser: TestClient, ehr: FakeEhr, views: SmartViews
) -> None:
    _sign_in(browser, ehr)
    csrf = _csrf(browser.get("/clinician").text)
    views.views.conflict = True  # type: ignore[attr-defined]
    response = browser.post(
        "/clinician/discussed", data={"task": "t1", "version": "3", "csrf": csrf}
    )
    assert response.status_code == 303
    page = browser.get("/clinician").text
    assert "changed meanwhile" in page
    assert "reloaded" in page


def test_a_refused_token_is_a_403_page_and_an_expired_one_ends_the_session(
    browser: TestClient, ehr: FakeEhr, views: SmartViews
) -> None:
    _sign_in(browser, ehr)
    views.views.refuse = 403  # type: ignore[attr-defined]
    assert browser.get("/clinician").status_code == 403
    views.views.refuse = 401  # type: ignore[attr-defined]
    assert browser.get("/clinician").status_code == 401
    views.views.refuse = None  # type: ignore[attr-defined]
    assert browser.get("/clinician").status_code == 401  # the session is gone


def test_without_launch_context_a_picker_and_never_over_a_context(
    browser: TestClient, ehr: FakeEhr, views: SmartViews
) -> None:
    ehr.patient = None
    _sign_in(browser, ehr)
    picker = browser.get("/clinician")
    assert "Choose a patient" in picker.text
    assert "Test Person" in picker.text
    csrf = _csrf(picker.text)
    assert (
        browser.post("/clinician/patient", data={"patient": "123", "csrf": csrf}).status_code == 303
    )
    assert "report of 123" in browser.get("/clinician").text
    # the context is now set: a form cannot switch to another patient
    again = browser.post("/clinician/patient", data={"patient": "999", "csrf": csrf})
    assert again.status_code == 403
    assert "report of 123" in browser.get("/clinician").text


def test_standalone_launch_asks_for_launch_patient_and_sends_no_launch(
    browser: TestClient,
) -> None:
    response = browser.get("/launch/standalone")
    query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["location"]).query).items()}
    assert query["scope"] == "launch/patient openid fhirUser patient/*.rs patient/Task.u"
    assert "launch" not in query
    assert browser.get("/launch/standalone", params={"iss": "https://x.example"}).status_code == 400


def test_sessions_expire_and_are_bounded() -> None:
    now = [0.0]
    store = SessionStore(ttl=60, limit=2, clock=lambda: now[0])
    first = store.new()
    now[0] = 30
    assert store.get(first.sid) is first
    now[0] = 89
    assert store.get(first.sid) is first  # 59 s after its last use
    now[0] = 150
    assert store.get(first.sid) is None
    a, b, c = store.new(), store.new(), store.new()
    assert len(store) == 2
    assert store.get(a.sid) is None
    assert store.get(b.sid) is b
    assert store.get(c.sid) is c
    c.token_expires = 160
    now[0] = 161
    assert store.get(c.sid) is None  # never outlives its token


def test_the_log_names_events_never_a_token_a_code_or_a_patient(
    browser: TestClient, ehr: FakeEhr
) -> None:
    stream = io.StringIO()
    alog.configure(level="INFO", json=True, stream=stream)
    try:
        _sign_in(browser, ehr)
        browser.get("/clinician")
        browser.get("/callback", params={"code": "code-9", "state": "forged"})
    finally:
        alog.configure()  # the default (INFO): tests after this one capture info events
    text = stream.getvalue()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert "smart.launch" in events
    assert "smart.signed_in" in events
    assert "smart.callback_refused" in events
    assert TOKEN not in text
    assert "code-0" not in text
    assert "code-9" not in text
    assert '"123"' not in text
