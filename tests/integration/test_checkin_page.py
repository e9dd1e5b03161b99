"""The check-in page in real headless Chromium against HAPI (issue #16 items 4-5).

One browser and one ``serve`` app for the module. Each instrument's link is opened at a tablet
viewport, answered by clicking and typing, and submitted; then HAPI holds exactly one
QuestionnaireResponse and one score Observation for it, whose totals equal the renderer's.
Screenshots land in ``test-artifacts/checkin/`` (gitignored).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn

from alliance_fhir.api import AllianceFhir
from alliance_fhir.api.checkin import Checkins
from alliance_fhir.api.checkin_links import create_checkin_link, read_token
from alliance_fhir.config import Settings
from alliance_fhir.web.app import create_app

from .browser import BrowserError, Chromium
from .clinickit import REPO, copy_clinic
from .conftest import expunge_everything

pytestmark = pytest.mark.integration

NS = "http://alliance-fhir.org/fhir/identifier"
MRN = "http://example-clinic.org/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi|1234567893"  # the example clinic's clinician
NO_CACHE = {"Cache-Control": "no-cache"}
SECRET = "test-only check-in secret, 32+ characters long"
ARTIFACTS = REPO / "test-artifacts" / "checkin"


@dataclass
class Web:
    origin: str
    settings: Settings
    checkins: Checkins

    def link(self, patient: str, instrument: str, **kw: Any) -> str:
        made = create_checkin_link(self.settings, patient=patient, instrument=instrument, **kw)
        return f"{self.origin}/checkin/{made.token}"

    def key(self, url: str) -> str:
        return read_token(self.settings, url.rsplit("/", 1)[1]).assessment_key


def _free_port() -> int:
    wanted = int(os.environ.get("ALLIANCE_FHIR_TEST_WEB_PORT", "0"))
    if wanted:
        return wanted
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def web(fhir_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """An empty HAPI with the example clinic's people and our Questionnaires, and the app."""
    tmp = tmp_path_factory.mktemp("checkin")
    expunge_everything(fhir_base_url)
    examples = copy_clinic(tmp)
    with AllianceFhir(Settings(server_url=fhir_base_url, state_path=tmp / "seed.sqlite3")) as af:
        af.seed(examples / "clinic" / "people.json")
        assert af.publish(labels_only=True).ok
    port = _free_port()
    origin = f"http://127.0.0.1:{port}"
    settings = Settings(
        server_url=fhir_base_url,
        state_path=tmp / "state.sqlite3",
        checkin_secret=SECRET,
        checkin_base_url=origin,
    )
    checkins = Checkins(settings)
    app = create_app(settings, checkins=checkins)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the check-in app did not start"
        time.sleep(0.05)
    try:
        yield Web(origin, settings, checkins)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        checkins.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


def _search(http: httpx.Client, rtype: str, **params: str) -> list[dict[str, Any]]:
    resp = http.get(f"/{rtype}", params={**params, "_count": "200"}, headers=NO_CACHE)
    resp.raise_for_status()
    return [e["resource"] for e in resp.json().get("entry") or []]


def _patient_id(http: httpx.Client, mrn: str) -> str:
    return str(_search(http, "Patient", identifier=f"{MRN}|{mrn}")[0]["id"])


def _walk(items: list[dict[str, Any]], path: str = "") -> Iterator[tuple[dict[str, Any], str]]:
    """Each Questionnaire item with the element id LHC-Forms gives it (``linkId/1``...)."""
    for item in items:
        element = f"{item['linkId']}{path}/1"
        yield item, element
        yield from _walk(item.get("item") or [], f"{path}/1")


_CHOSEN = """(() => {
  const el = document.querySelector(%s);
  if (!el) return false;
  return el.checked === true || (el.control != null && el.control.checked === true)
    || el.querySelector('input:checked') != null;
})()"""


def _choose(browser: Chromium, selector: str) -> None:
    """Tap an answer and see that it is chosen, tapping again if the tap was lost (the form
    re-lays itself out as rows become active, and a tap during that can miss)."""
    for _ in range(3):
        browser.click(selector)
        browser.pump(0.1)
        if browser.evaluate(_CHOSEN % json.dumps(selector)):
            return
    raise BrowserError(f"the answer {selector} is not chosen after three taps")


def _fill(
    browser: Chromium, questionnaire: dict[str, Any], *, number: str, pick: int, skip: int = 0
) -> int:
    """Answer every required item as a client would: click a radio button's label, or click
    a number box and type. ``skip`` leaves that many required items unanswered."""
    answered = 0
    left_out = 0
    for item, element in _walk(questionnaire["item"]):
        if not item.get("required") or item.get("readOnly"):
            continue
        if left_out < skip:
            left_out += 1
            continue
        options = item.get("answerOption") or []
        if options:
            coding = options[(pick + answered) % len(options)]["valueCoding"]
            _choose(browser, f'[id="{element}|{coding["system"]}|{coding["code"]}"]')
        else:
            browser.click(f'[id="{element}"]')
            browser.type(number)
        answered += 1
    browser.click("h1")  # leave the last box, as a tap elsewhere would
    browser.pump(0.2)
    return answered


def _renderer_scores(browser: Chromium) -> dict[str, float]:
    """The renderer's own calculated totals (its calculatedExpression items)."""
    qr = browser.evaluate(
        "LForms.Util.getFormFHIRData('QuestionnaireResponse', 'R4', "
        "document.getElementById('form'))"
    )
    return {
        item["linkId"].removeprefix("score."): float(item["answer"][0]["valueDecimal"])
        for item in qr["item"]
        if item["linkId"].startswith("score.") and item.get("answer")
    }


def _submit(browser: Chromium) -> int:
    """Press Submit as a person would: again if the tap did not register (the page says
    "Sending..." at once when it does; a second tap on a disabled button does nothing)."""
    started = "document.getElementById('message').textContent || "
    started += "document.body.getAttribute('data-status')"
    for _ in range(3):
        browser.click("#submit")
        try:
            browser.wait_for(started, timeout=10)
            break
        except BrowserError:
            continue
    return int(browser.wait_for("document.body.getAttribute('data-status')", timeout=120))


def _open(browser: Chromium, url: str) -> None:
    assert browser.navigate(url) == 200
    browser.wait_for("document.body.getAttribute('data-ready')")


INSTRUMENTS = [
    # instrument, patient, the number typed into 0-10 boxes, the first option clicked
    ("srs", "MRN-1001", "2", 0),
    ("ors", "MRN-1002", "6.5", 0),
    ("trc-client", "MRN-1003", "", 3),
    ("trc-clinician", "MRN-1004", "", 2),
    ("wai-sr", "MRN-1002", "", 1),
]


@pytest.mark.parametrize(("instrument", "mrn", "number", "pick"), INSTRUMENTS)
def test_a_client_fills_and_submits_each_instrument(
    web: Web,
    browser: Chromium,
    fhir_http: httpx.Client,
    instrument: str,
    mrn: str,
    number: str,
    pick: int,
) -> None:
    encounter = None
    if instrument == "ors":
        patient_ref = f"Patient/{_patient_id(fhir_http, mrn)}"
        body = {
            "resourceType": "Encounter",
            "status": "in-progress",
            "subject": {"reference": patient_ref},
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        }
        created = fhir_http.post(
            "/Encounter", json=body, headers={"Content-Type": "application/fhir+json"}
        )
        created.raise_for_status()
        encounter = str(created.json()["id"])
    clinician = NPI if instrument == "trc-clinician" else None
    url = web.link(f"{MRN}|{mrn}", instrument, encounter=encounter, practitioner=clinician)
    assert mrn not in url
    assert "MRN" not in url
    _open(browser, url)
    questionnaire = web.checkins.questionnaire(instrument)
    assert _fill(browser, questionnaire, number=number, pick=pick) > 0
    shown = browser.evaluate("document.getElementById('form').innerText")
    assert " - 1" not in shown
    assert " - 5" not in shown
    renderer = _renderer_scores(browser)
    browser.screenshot(ARTIFACTS / f"{instrument}-filled.png")

    assert _submit(browser) == 200
    assert "Thank you" in browser.evaluate("document.getElementById('message').textContent")
    browser.screenshot(ARTIFACTS / f"{instrument}-sent.png")
    origin = web.origin + "/"
    assert [u for u in browser.requested if not u.startswith(origin)] == []
    assert browser.problems == []

    key = web.key(url)
    qrs = _search(fhir_http, "QuestionnaireResponse", identifier=f"{NS}/assessment|{key}")
    assert len(qrs) == 1
    qr = qrs[0]
    assert qr["status"] == "completed"
    assert qr["subject"]["reference"] == f"Patient/{_patient_id(fhir_http, mrn)}"
    assert qr["questionnaire"].startswith(questionnaire["url"])
    assert datetime.fromisoformat(qr["authored"]) > datetime.now(UTC) - timedelta(minutes=10)
    if clinician is not None:
        assert qr["author"]["reference"].startswith("Practitioner/")
    if encounter is not None:
        assert qr["encounter"]["reference"] == f"Encounter/{encounter}"
    observations = _search(fhir_http, "Observation", identifier=f"{NS}/score|{key}")
    assert len(observations) == 1
    ours = {"total": float(observations[0]["valueQuantity"]["value"])}
    for component in observations[0].get("component") or []:
        code = component["code"]["coding"][0]["code"]
        ours[code.removeprefix(f"{instrument}.")] = float(component["valueQuantity"]["value"])
    assert renderer == pytest.approx(ours)


def test_a_low_srs_leaves_an_active_flag_and_a_task(
    web: Web, browser: Chromium, fhir_http: httpx.Client
) -> None:
    patient = _patient_id(fhir_http, "MRN-1003")
    url = web.link(f"{MRN}|MRN-1003", "srs")
    _open(browser, url)
    _fill(browser, web.checkins.questionnaire("srs"), number="3", pick=0)
    assert _renderer_scores(browser) == {"total": 12.0}
    assert _submit(browser) == 200
    flags = _search(fhir_http, "Flag", subject=f"Patient/{patient}")
    assert [f["status"] for f in flags if "srs-below-cutoff" in str(f["identifier"])] == ["active"]
    tasks = _search(fhir_http, "Task", patient=f"Patient/{patient}")
    ours = [t["status"] for t in tasks if "srs-below-cutoff" in str(t["identifier"])]
    assert len(ours) == 1
    assert ours[0] not in ("completed", "cancelled", "rejected")


def test_a_used_link_is_refused_and_writes_nothing(
    web: Web, browser: Chromium, fhir_http: httpx.Client
) -> None:
    url = web.link(f"{MRN}|MRN-1004", "srs")
    _open(browser, url)
    _fill(browser, web.checkins.questionnaire("srs"), number="9", pick=0)
    answers = browser.evaluate(
        "LForms.Util.getFormFHIRData('QuestionnaireResponse', 'R4', "
        "document.getElementById('form')).item"
    )
    assert _submit(browser) == 200
    key = web.key(url)
    before = _search(fhir_http, "QuestionnaireResponse", identifier=f"{NS}/assessment|{key}")
    assert len(before) == 1

    assert browser.navigate(url) == 409
    assert "already been submitted" in browser.evaluate("document.body.innerText")
    browser.screenshot(ARTIFACTS / "used-link.png")
    again = httpx.post(url, json={"item": answers}, timeout=60)
    assert again.status_code == 409
    after = _search(fhir_http, "QuestionnaireResponse", identifier=f"{NS}/assessment|{key}")
    assert [r["meta"]["versionId"] for r in after] == [r["meta"]["versionId"] for r in before]
    assert len(_search(fhir_http, "Observation", identifier=f"{NS}/score|{key}")) == 1


def test_expired_and_tampered_links_are_refused(
    web: Web, browser: Chromium, fhir_http: httpx.Client
) -> None:
    past = datetime.now(UTC) - timedelta(hours=3)
    expired = web.link(f"{MRN}|MRN-1001", "srs", now=past)
    assert browser.navigate(expired) == 410
    assert "expired" in browser.evaluate("document.body.innerText")
    browser.screenshot(ARTIFACTS / "expired-link.png")

    genuine = web.link(f"{MRN}|MRN-1001", "srs")
    token = genuine.rsplit("/", 1)[1]
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    tampered = f"{web.origin}/checkin/{flipped}"
    assert browser.navigate(tampered) == 400
    assert "not valid" in browser.evaluate("document.body.innerText")

    answers = [{"linkId": f"q{i}", "answer": [{"valueDecimal": 1}]} for i in range(1, 5)]
    for url, status in ((expired, 410), (tampered, 400)):
        assert httpx.post(url, json={"item": answers}, timeout=60).status_code == status
    patient = _patient_id(fhir_http, "MRN-1001")
    written = _search(fhir_http, "QuestionnaireResponse", subject=f"Patient/{patient}")
    assert web.key(genuine) not in str(written)


def test_a_missing_answer_blocks_submit_and_the_server_checks_again(
    web: Web, browser: Chromium, fhir_http: httpx.Client
) -> None:
    url = web.link(f"{MRN}|MRN-1002", "srs")
    _open(browser, url)
    _fill(browser, web.checkins.questionnaire("srs"), number="7", pick=0, skip=1)
    browser.click("#submit")
    assert browser.wait_for("document.body.getAttribute('data-blocked')") == "1"
    assert "answer every question" in browser.evaluate(
        "document.getElementById('message').textContent"
    )
    assert browser.evaluate("document.body.getAttribute('data-status')") is None
    browser.screenshot(ARTIFACTS / "srs-missing-answer.png")

    partial = [{"linkId": f"q{i}", "answer": [{"valueDecimal": 7}]} for i in range(2, 5)]
    refused = httpx.post(url, json={"item": partial}, timeout=60)
    assert refused.status_code == 422
    assert refused.json()["message"].startswith("Some answers are missing")
    assert any(p["field"] for p in refused.json()["problems"])
    key = web.key(url)
    assert _search(fhir_http, "QuestionnaireResponse", identifier=f"{NS}/assessment|{key}") == []
    # still usable: the refusal wrote nothing and did not use the link up
    assert browser.navigate(url) == 200
