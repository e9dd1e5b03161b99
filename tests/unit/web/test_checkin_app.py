"""The serve app without a FHIR server: security headers on every answer, refusals as
pages and JSON with the right status, nothing written for a refused link, no token in logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient  # its httpx deprecation warning is harmless

from alliance_fhir.api.checkin import Checkins
from alliance_fhir.api.checkin_links import create_checkin_link
from alliance_fhir.config import Settings
from alliance_fhir.web.app import CSP, create_app

SECRET = "unit-test check-in secret of 32+ characters"
PATIENT = "http://example-clinic.org/mrn|MRN-7001"
#: Nothing listens here: a request that reached the FHIR server would fail loudly.
NO_SERVER = "http://127.0.0.1:9/fhir"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        server_url=NO_SERVER, state_path=tmp_path / "state.sqlite3", checkin_secret=SECRET
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def _token(settings: Settings, **kw: object) -> str:
    return create_checkin_link(settings, patient=PATIENT, instrument="srs", **kw).token  # type: ignore[arg-type]  # test helper passes through


def _assert_secure(resp: httpx.Response, *, cacheable: bool = False) -> None:
    assert resp.headers["content-security-policy"] == CSP
    assert "default-src 'self'" in CSP
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["referrer-policy"] == "no-referrer"
    if not cacheable:
        assert resp.headers["cache-control"] == "no-store"


def test_a_form_page_embeds_the_questionnaire_and_our_assets_only(
    client: TestClient, settings: Settings
) -> None:
    resp = client.get(f"/checkin/{_token(settings)}")
    if resp.status_code == 503:
        pytest.fail("the LHC-Forms files are missing: run `make web-assets`")
    assert resp.status_code == 200
    _assert_secure(resp)
    page = resp.text
    assert '<script type="application/json" id="questionnaire">' in page
    assert "http://alliance-fhir.org/fhir/Questionnaire/srs" in page
    assert "MRN-7001" not in page
    assert "Your answers go to your clinician only." in page
    for src in ("/assets/checkin/lforms/lhc-forms.js", "/assets/checkin/checkin.js"):
        assert f'src="{src}"' in page
    assert "<script>" not in page  # no inline script: the CSP refuses them
    assert 'src="http' not in page
    assert 'href="http' not in page


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda s: _token(s, now=datetime.now(UTC) - timedelta(hours=3)), 410, "expired"),
        (lambda s: _token(s)[:-6] + "AAAAAA", 400, "not valid"),
        (lambda s: "gAAAAA-not-a-token", 400, "not valid"),
    ],
)
def test_bad_links_get_a_clear_page_and_json_refusal(
    client: TestClient, settings: Settings, make: object, status: int, words: str
) -> None:
    token = make(settings)  # type: ignore[operator]  # the parametrized builders
    page = client.get(f"/checkin/{token}")
    assert page.status_code == status
    _assert_secure(page)
    assert words in page.text
    answers = {"item": [{"linkId": "q1", "answer": [{"valueDecimal": 1}]}]}
    posted = client.post(f"/checkin/{token}", json=answers)
    assert posted.status_code == status
    assert words in posted.json()["message"]
    _assert_secure(posted)


def test_a_used_link_is_refused_before_any_server_request(
    settings: Settings, tmp_path: Path
) -> None:
    token = _token(settings)
    checkins = Checkins(settings)
    from alliance_fhir.api.checkin_links import UsedLinks, read_token

    UsedLinks(checkins.af.store).claim(read_token(settings, token))
    with TestClient(create_app(settings, checkins=checkins)) as client:
        assert client.get(f"/checkin/{token}").status_code == 409
        resp = client.post(f"/checkin/{token}", json={"item": []})
    assert resp.status_code == 409
    assert "already been submitted" in resp.json()["message"]
    checkins.close()


def test_missing_answers_are_422_with_every_problem_and_nothing_sent(
    client: TestClient, settings: Settings
) -> None:
    token = _token(settings)
    one_answer = {"item": [{"linkId": "q1", "answer": [{"valueDecimal": 4}]}]}
    resp = client.post(f"/checkin/{token}", json=one_answer)
    assert resp.status_code == 422
    body = resp.json()
    assert body["message"] == "Some answers are missing or not valid. Please check the form."
    assert len(body["problems"]) >= 1
    assert "MRN-7001" not in resp.text
    # the link is still usable: nothing was claimed (the page opens again)
    assert client.get(f"/checkin/{token}").status_code in (200, 503)


def test_a_submission_must_be_json(client: TestClient, settings: Settings) -> None:
    token = _token(settings)
    assert client.post(f"/checkin/{token}", content=b"q1=4").status_code == 415
    bad = client.post(
        f"/checkin/{token}", content=b"{", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400


def test_static_files_may_be_cached_pages_never(client: TestClient) -> None:
    resp = client.get("/assets/checkin/checkin.js")
    assert resp.status_code == 200
    _assert_secure(resp, cacheable=True)
    assert "no-store" not in resp.headers.get("cache-control", "")
    missing = client.get("/nothing-here")
    assert missing.status_code == 404
    _assert_secure(missing)


def _free_port() -> int:
    """``$ALLIANCE_FHIR_TEST_WEB_PORT`` + 1 where a developer's ports are assigned, else any."""
    wanted = int(os.environ.get("ALLIANCE_FHIR_TEST_WEB_PORT", "0"))
    if wanted:
        return wanted + 1
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_prints_no_request_paths(tmp_path: Path) -> None:
    """`alliance-fhir -v serve`: uvicorn's access log is off, so a token never reaches it."""
    port = _free_port()
    env = {
        **os.environ,
        "ALLIANCE_FHIR_CHECKIN_SECRET": SECRET,
        "ALLIANCE_FHIR_SERVER_URL": NO_SERVER,
    }
    env.pop("ALLIANCE_FHIR_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "alliance_fhir.cli", "-v", "--state", str(tmp_path / "s.sqlite3"),
         "serve", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/checkin/gAAAAAtokenpart-xyz", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert resp.status_code == 400
        assert "server" not in resp.headers
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "tokenpart" not in out + err
    assert "GET /checkin" not in out + err


def test_the_one_app_also_answers_cds_discovery_and_refuses_unsigned_hooks(
    client: TestClient,
) -> None:
    """`serve` is one app: the CDS Hooks service sits beside the check-in page, with the
    same headers, and a hook call without the EHR's JWT is a 401 before anything is read."""
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    assert [s["id"] for s in resp.json()["services"]] == ["alliance-patient-view"]
    _assert_secure(resp)
    hook = client.post("/cds-services/alliance-patient-view", json={"hook": "patient-view"})
    assert hook.status_code == 401


def test_a_features_own_policy_headers_are_kept_not_doubled(settings: Settings) -> None:
    """The SMART view answers with its own CSP and ``Referrer-Policy: same-origin`` (its
    forms must post with a real Origin); the app-wide headers must not be added beside them,
    or the browser would apply the app's ``no-referrer`` and the forms would fail."""
    with TestClient(create_app(settings)) as client:
        resp = client.get("/launch", params={"iss": "https://unknown.example/fhir"})
    assert resp.status_code == 400
    assert resp.headers.get_list("referrer-policy") == ["same-origin"]
    assert len(resp.headers.get_list("content-security-policy")) == 1
    assert resp.headers["content-security-policy"] != CSP
    assert resp.headers["x-frame-options"] == "DENY"  # what the view does not set is added
    assert resp.headers.get_list("cache-control") == ["no-store"]
