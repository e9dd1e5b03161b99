"""The SMART clinician view end to end (#18): headless Chromium, our app (uvicorn), a real
OpenID provider (oidc-provider, tests/oidc) and HAPI checking the bearer token.

The example clinic is loaded through the bearer-checked server with a Backend Services
client (the same provider), the monitor raises its alerts, and the EHR launch contexts name
the clinic's patients. Then, as a clinician's browser would: the right patient's report
renders (with what the client said); acknowledging and "discussed with client" change the
Task on the server, and a Task changed meanwhile is reported, not overwritten; a forged
``state``, an unknown ``iss``, a replayed code and a token for another patient are refused.

Ports: the app on ``$ALLIANCE_FHIR_SMART_APP_TEST_PORT`` (default 8192); the provider and
the bearer-checked mount of the test server are the session's (``oidc_provider``,
``smart_fhir_base_url``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.web.app import create_app

from .browser import Chromium
from .clinickit import PHI, copy_clinic
from .conftest import LOG_CAPTURE, expunge_everything
from .oidckit import OidcProvider, TestKey

APP_PORT = int(os.environ.get("ALLIANCE_FHIR_SMART_APP_TEST_PORT", "8192"))
APP = f"http://127.0.0.1:{APP_PORT}"
CLIENT_ID = "clinician-view"
MRN = "http://example-clinic.org/mrn"
SEED_KEY = TestKey.generate("smart-view-seed", "ES384")


@dataclass
class Stack:
    fhir: str
    provider: OidcProvider
    admin: AllianceFhir  # a Backend Services client on the bearer-checked server
    patients: dict[str, str]  # MRN -> server id


def _admin(fhir: str, provider: OidcProvider, tmp: Path) -> AllianceFhir:
    key_file = tmp / "seed-key.pem"
    key_file.write_text(SEED_KEY.private_pem)
    key_file.chmod(0o600)
    settings = Settings(
        server_url=fhir,
        auth="smart",
        smart_client_id="smart-view-seed",
        smart_key_id=SEED_KEY.kid,
        smart_private_key_file=key_file,
        smart_algorithm="ES384",
        smart_scopes="system/*.cruds",
        smart_token_url=provider.token_endpoint,
        state_path=tmp / "seed.sqlite3",
    )
    return AllianceFhir(settings)


@pytest.fixture(scope="module")
def stack(
    oidc_provider: OidcProvider,
    fhir_base_url: str,
    smart_fhir_base_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    expunge_everything(fhir_base_url)  # the bearer-checked mount shares /fhir's database
    tmp = tmp_path_factory.mktemp("smart-view")
    oidc_provider.register_backend_client("smart-view-seed", [SEED_KEY], "system/*.cruds")
    oidc_provider.register_launch_client(CLIENT_ID, [f"{APP}/callback"])
    oidc_provider.apply()
    fhir = smart_fhir_base_url
    examples = copy_clinic(tmp)
    admin = _admin(fhir, oidc_provider, tmp)
    try:
        admin.seed(examples / "clinic" / "people.json")
        assert admin.publish(labels_only=True).ok
        # the two clients the tests launch for (the others would only cost time)
        checkins = examples / "clinic" / "assessments"
        assert admin.push_assessments([checkins / "mrn-1001.yaml", checkins / "mrn-1003.yaml"]).ok
        assert admin.push_goals([examples / "goals"]).ok
        assert admin.monitor(all_patients=True).ok
        patients = {}
        for mrn in ("MRN-1001", "MRN-1003"):
            found = list(admin.client.search("Patient", {"identifier": f"{MRN}|{mrn}"}))
            patients[mrn] = str(found[0]["id"])
            oidc_provider.add_launch(f"launch-{mrn}", patient=patients[mrn], user="test-clinician")
        oidc_provider.apply()
        yield Stack(fhir, oidc_provider, admin, patients)
    finally:
        admin.close()


@pytest.fixture(scope="module")
def app(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``alliance-fhir serve``'s one app (the SMART view among its routes, behind the same
    security headers) served by uvicorn on APP_PORT, for the browser."""
    settings = Settings(
        server_url=stack.fhir,
        smart_app_client_id=CLIENT_ID,
        smart_app_issuers=[stack.fhir],
        smart_app_url=APP,
        state_path=tmp_path_factory.mktemp("smart-app") / "state.sqlite3",
    )
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=APP_PORT,
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield APP
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Chromium]:
    chromium = Chromium(width=1200, height=1600)
    try:
        yield chromium
    finally:
        chromium.close()


def _launch_url(stack: Stack, mrn: str) -> str:
    query = httpx.QueryParams({"iss": stack.fhir, "launch": f"launch-{mrn}"})
    return f"{APP}/launch?{query}"


def _open_tasks(stack: Stack, patient: str) -> list[dict[str, Any]]:
    params = {"subject": f"Patient/{patient}", "identifier": f"{_task_system()}|"}
    return list(stack.admin.client.search("Task", params))


def _task_system() -> str:
    return "http://alliance-fhir.org/fhir/identifier/alert-task"


def test_an_ehr_launch_shows_the_right_patients_report(
    app: str, stack: Stack, browser: Chromium, tmp_path: Path
) -> None:
    patient = stack.patients["MRN-1003"]
    browser.goto(_launch_url(stack, "MRN-1003"), lands_on=f"{app}/clinician")

    text = browser.text
    assert f"Therapeutic alliance report: Client {patient}" in text
    assert "Open alerts (" in text
    assert "What the client said" in text
    assert "I would like more say in what we talk about." in text
    assert "Conversation prompts" in text
    assert browser.url == f"{app}/clinician"
    assert browser.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    assert browser.evaluate("document.scripts.length") == 0
    for value in PHI:
        assert value not in text
    shot = browser.screenshot(tmp_path / "clinician-view.png")
    assert shot.stat().st_size > 10_000


def test_acknowledge_discussed_and_a_task_changed_meanwhile(
    app: str, stack: Stack, browser: Chromium
) -> None:
    patient = stack.patients["MRN-1003"]
    browser.goto(_launch_url(stack, "MRN-1003"), lands_on=f"{app}/clinician")
    first = browser.evaluate(
        "document.querySelector('form[action=\"/clinician/acknowledge\"] input[name=task]').value"
    )

    browser.click('form[action="/clinician/acknowledge"] button', lands_on=f"{app}/clinician")
    assert "Alert acknowledged." in browser.text
    task = stack.admin.client.read("Task", first).resource
    assert task["status"] == "accepted"

    selector = f'form[action="/clinician/discussed"]:has(input[name=task][value="{first}"])'
    browser.click(f"{selector} button", lands_on=f"{app}/clinician")
    assert "Marked as discussed with client." in browser.text
    outputs = stack.admin.client.read("Task", first).resource["output"]
    assert [o["type"]["coding"][0]["code"] for o in outputs] == ["discussed-with-client"]

    # someone changes the Task in the EHR while the page is open: ours is not written
    current = stack.admin.client.read("Task", first)
    changed = dict(current.resource)
    changed["note"] = [*changed.get("note", []), {"text": "seen by the supervisor"}]
    stack.admin.client.update(changed, if_match=current.version_id)
    browser.click(f"{selector} button", lands_on=f"{app}/clinician")
    assert "changed meanwhile" in browser.text
    after = stack.admin.client.read("Task", first).resource
    assert len(after["output"]) == 1
    assert after["for"]["reference"] == f"Patient/{patient}"


def test_a_forged_state_is_refused(app: str, stack: Stack, browser: Chromium) -> None:
    browser.pause_requests(f"{app}/callback*")
    browser.start(_launch_url(stack, "MRN-1003"))
    request_id, url = browser.paused_request()
    state = httpx.URL(url).params["state"]
    browser.release(request_id, url=url.replace(f"state={state}", "state=forged-state"))
    browser.wait_for_page(f"{app}/callback")

    assert "its state does not match" in browser.text
    browser.goto(f"{app}/clinician")
    assert "This session has ended" in browser.text


def test_a_replayed_code_is_refused(app: str, stack: Stack, browser: Chromium) -> None:
    browser.pause_requests(f"{app}/callback*")
    browser.start(_launch_url(stack, "MRN-1001"))
    first_id, first_url = browser.paused_request()
    browser.release(first_id)
    browser.wait_for_page(f"{app}/clinician")
    used_code = httpx.URL(first_url).params["code"]

    browser.pause_requests(f"{app}/callback*")
    browser.start(_launch_url(stack, "MRN-1001"))
    second_id, second_url = browser.paused_request()
    fresh = httpx.URL(second_url).params["code"]
    browser.release(second_id, url=second_url.replace(f"code={fresh}", f"code={used_code}"))
    browser.wait_for_page(f"{app}/callback")

    assert "refused to complete the sign-in (invalid_grant)" in browser.text


def test_an_unknown_iss_is_refused(app: str, browser: Chromium) -> None:
    with socket.socket() as probe:  # a port nobody listens on: nothing may be asked of it
        probe.bind(("127.0.0.1", 0))
        other = f"http://127.0.0.1:{probe.getsockname()[1]}/fhir"
    query = httpx.QueryParams({"iss": other, "launch": "launch-MRN-1003"})
    browser.goto(f"{app}/launch?{query}", lands_on=f"{app}/launch")
    assert "not one this app is configured to work with" in browser.text


def test_a_token_for_another_patient_is_refused(app: str, stack: Stack, browser: Chromium) -> None:
    """Signed in for MRN-1003, the clinician's form is pointed at an alert Task of MRN-1001:
    the token's patient is not that Task's, and nothing is written."""
    other = stack.patients["MRN-1001"]
    created = stack.admin.client.create(
        {
            "resourceType": "Task",
            "identifier": [{"system": _task_system(), "value": f"test-rule:{other}"}],
            "status": "requested",
            "intent": "order",
            "description": "another patient's alert",
            "for": {"reference": f"Patient/{other}"},
        }
    )
    other_task = str(created.resource_id)
    browser.goto(_launch_url(stack, "MRN-1003"), lands_on=f"{app}/clinician")
    assert "another patient's alert" not in browser.text

    browser.set_value('form[action="/clinician/discussed"] input[name=task]', other_task)
    browser.click('form[action="/clinician/discussed"] button', lands_on=app)

    assert browser.url == f"{app}/clinician/discussed"
    assert "Not allowed" in browser.text or "No such alert for this patient" in browser.text
    untouched = stack.admin.client.read("Task", other_task).resource
    assert untouched["status"] == "requested"
    assert "output" not in untouched


def test_the_view_logs_no_token_and_no_patient_data() -> None:
    lines = "\n".join(LOG_CAPTURE.lines)
    for value in PHI:
        assert value not in lines
    assert "eyJ" not in lines  # no JWT (access or id token)
