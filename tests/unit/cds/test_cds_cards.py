"""The patient-view service's answers, checked against the CDS Hooks 2.0 card rules: one card
per open alliance concern judged with the monitor's rules, none when nothing is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.api.cds_feedback import CDS_COUNTERS
from alliance_fhir.app.alert_writer import RECOVERED_REASON

from . import cdskit as k
from .cdskit import TestClient

INDICATORS = {"info", "warning", "critical"}
LINK_TYPES = {"absolute", "smart"}
SRS_FALLING = [9.6, 9.7, 9.4, 7.8]  # totals 38.4, 38.8, 37.6, 31.2


@pytest.fixture(scope="module")
def key() -> k.EhrKey:
    return k.EhrKey.make("ES384")


@pytest.fixture
def cds(key: k.EhrKey, tmp_path: Path) -> Iterator[TestClient]:
    with k.serve_jwks(k.Jwks([key])) as jwks:
        yield k.client(k.settings(jwks.url, tmp_path))


def _post(cds: TestClient, key: k.EhrKey, body: dict[str, Any]) -> Any:
    auth = {"Authorization": f"Bearer {k.sign(key)}"}
    return cds.post("/cds-services/alliance-patient-view", json=body, headers=auth)


def _cards(cds: TestClient, key: k.EhrKey, patient: str, prefetch: dict[str, Any]) -> Any:
    resp = _post(cds, key, k.call(patient, prefetch=prefetch))
    assert resp.status_code == 200, resp.text
    assert set(resp.json()) == {"cards"}
    return resp.json()["cards"]


def assert_spec_card(card: dict[str, Any]) -> None:
    """The CDS Hooks 2.0 rules for a card this service makes."""
    assert isinstance(card["summary"], str)
    assert 0 < len(card["summary"]) <= 140
    assert card["indicator"] in INDICATORS
    assert isinstance(card["source"]["label"], str)
    assert card["source"]["label"]
    assert isinstance(card["uuid"], str)
    assert len(card["uuid"]) == 36
    assert "suggestions" not in card
    assert "selectionBehavior" not in card
    for link in card["links"]:
        assert link["label"]
        assert link["type"] in LINK_TYPES
        assert link["url"].startswith("https://")
    assert card["links"] == [
        {"label": "Open the alliance view", "url": f"{k.PUBLIC}/launch", "type": "smart"}
    ]


def test_discovery_declares_the_service_and_its_prefetch(cds: TestClient) -> None:
    services = cds.get("/cds-services").json()["services"]
    assert [(s["id"], s["hook"]) for s in services] == [("alliance-patient-view", "patient-view")]
    prefetch = services[0]["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    assert prefetch["scores"].startswith("Observation?patient={{context.patientId}}&identifier=")
    assert prefetch["alertFlags"].startswith("Flag?patient={{context.patientId}}")
    assert prefetch["alertTasks"].startswith("Task?patient={{context.patientId}}")
    assert services[0]["title"]
    assert services[0]["description"]


def test_the_falling_example_client_gets_a_card_and_the_steady_one_none(
    cds: TestClient, key: k.EhrKey
) -> None:
    falling = _cards(cds, key, "p3", k.prefetch_for("p3", k.example_observations("MRN-1003", "p3")))
    steady = _cards(cds, key, "p1", k.prefetch_for("p1", k.example_observations("MRN-1001", "p1")))

    assert steady == []
    assert len(falling) >= 1
    for card in falling:
        assert_spec_card(card)
    assert falling[0]["summary"] == (
        "Relationship check-in below the cutoff: 3.41 on 2024-02-21, cutoff 4; "
        "ask the client what is not working"
    )
    assert falling[0]["indicator"] == "warning"
    assert "possible strain in the working relationship" in falling[0]["detail"]


def test_a_session_rating_below_the_cutoff_and_a_drop_are_two_warnings(
    cds: TestClient, key: k.EhrKey
) -> None:
    cards = _cards(cds, key, "p9", k.prefetch_for("p9", k.srs_observations("p9", SRS_FALLING)))

    assert [c["summary"] for c in cards] == [
        "Session rating below 36: 31.2 on 2024-01-24, cutoff 36; "
        "ask the client what to change about the session",
        "Session rating dropped by 6.4: 37.6 to 31.2 on 2024-01-24; "
        "possible rupture, raise it in the next session",
    ]
    assert [c["indicator"] for c in cards] == ["warning", "warning"]
    for card in cards:
        assert_spec_card(card)


def test_recovered_scores_give_no_card_although_the_monitor_has_not_closed_the_alert_yet(
    cds: TestClient, key: k.EhrKey
) -> None:
    observations = k.srs_observations("p9", [*SRS_FALLING, 9.5])
    flag = k.alert("Flag", "srs-below-cutoff", "p9", status="active")
    task = k.alert("Task", "srs-below-cutoff", "p9", status="requested", priority="urgent")

    assert _cards(cds, key, "p9", k.prefetch_for("p9", observations, [flag], [task])) == []


def test_an_open_item_floor_alert_is_a_critical_card_and_a_closed_one_none(
    cds: TestClient, key: k.EhrKey
) -> None:
    observations = k.example_observations("MRN-1001", "p1")
    open_flag = k.alert("Flag", "trc-client-heard-floor", "p1", status="active")
    open_task = k.alert("Task", "trc-client-heard-floor", "p1", status="requested")
    closed_flag = k.alert("Flag", "trc-client-safe-floor", "p1", status="inactive")
    closed_task = k.alert("Task", "trc-client-safe-floor", "p1", status="completed")

    cards = _cards(
        cds,
        key,
        "p1",
        k.prefetch_for("p1", observations, [open_flag, closed_flag], [open_task, closed_task]),
    )

    assert [c["summary"] for c in cards] == [
        "Client did not feel heard (alert open since 2024-02-22)"
    ]
    assert cards[0]["indicator"] == "critical"
    assert "lowest point" in cards[0]["detail"]
    assert_spec_card(cards[0])


def test_an_alert_the_clinician_closed_on_the_same_check_in_is_not_shown_again(
    cds: TestClient, key: k.EhrKey
) -> None:
    observations = k.srs_observations("p9", SRS_FALLING)
    latest_qr = "QuestionnaireResponse/s-qr-3"
    by_hand = k.alert("Task", "srs-drop", "p9", status="completed", focus=latest_qr)
    by_us = k.alert(
        "Task",
        "srs-below-cutoff",
        "p9",
        status="completed",
        focus=latest_qr,
        reason=RECOVERED_REASON,
    )

    cards = _cards(cds, key, "p9", k.prefetch_for("p9", observations, [], [by_hand, by_us]))

    assert [c["summary"].split(":")[0] for c in cards] == ["Session rating below 36"]


def test_resources_of_another_patient_in_the_prefetch_never_make_a_card(
    cds: TestClient, key: k.EhrKey
) -> None:
    other = k.srs_observations("someone-else", SRS_FALLING)
    flag = k.alert("Flag", "trc-client-heard-floor", "someone-else", status="active")
    prefetch = k.prefetch_for("p9", other, [flag])

    assert _cards(cds, key, "p9", prefetch) == []


def test_without_prefetch_or_fhir_authorization_the_answer_is_412(
    cds: TestClient, key: k.EhrKey
) -> None:
    partial = k.prefetch_for("p9", [])
    del partial["scores"]

    missing = _post(cds, key, k.call("p9"))
    incomplete = _post(cds, key, k.call("p9", prefetch=partial))
    plain_http = _post(
        cds, key, k.call("p9", fhir_server="http://ehr.example.org/fhir", token="t0k3n")
    )

    assert [missing.status_code, incomplete.status_code, plain_http.status_code] == [412] * 3
    assert "scores" in incomplete.json()["error"]
    # the Patient alone is not worth a call back to the EHR: no card depends on it
    no_patient = k.prefetch_for("p9", k.srs_observations("p9", SRS_FALLING))
    del no_patient["patient"]
    assert len(_cards(cds, key, "p9", no_patient)) == 2
    assert plain_http.json() == {"error": "fhirServer must be an https:// URL"}


def test_a_fhir_server_off_the_issuers_list_is_not_sent_the_token(
    key: k.EhrKey, tmp_path: Path
) -> None:
    with k.serve_jwks(k.Jwks([key])) as jwks:
        cfg = k.settings(
            jwks.url, tmp_path, issuer={"fhir_servers": ["https://ehr.example.org/fhir"]}
        )
        resp = _post(
            k.client(cfg), key, k.call("p9", fhir_server="https://evil.example.net/fhir", token="x")
        )
    assert resp.status_code == 412
    assert resp.json() == {"error": "fhirServer is not one of this issuer's fhir_servers"}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"hook": "order-select"}, 400),
        ({"context": {"patientId": "../Patient/1"}}, 400),
        ({"hookInstance": None}, 400),
    ],
)
def test_a_request_that_is_not_a_patient_view_call_is_400(
    cds: TestClient, key: k.EhrKey, change: dict[str, Any], status: int
) -> None:
    body = {**k.call("p9", prefetch=k.prefetch_for("p9", [])), **change}
    assert _post(cds, key, body).status_code == status


def test_another_service_id_is_404(cds: TestClient, key: k.EhrKey) -> None:
    auth = {"Authorization": f"Bearer {k.sign(key)}"}
    resp = cds.post("/cds-services/other", json=k.call("p9"), headers=auth)
    assert resp.status_code == 404


def test_feedback_counts_accepted_and_overridden_cards_per_rule(
    cds: TestClient, key: k.EhrKey
) -> None:
    CDS_COUNTERS.reset()
    cards = _cards(cds, key, "p9", k.prefetch_for("p9", k.srs_observations("p9", SRS_FALLING)))
    feedback = {
        "feedback": [
            {"card": cards[0]["uuid"], "outcome": "accepted", "outcomeTimestamp": "2024-03-01"},
            {
                "card": cards[1]["uuid"],
                "outcome": "overridden",
                "overrideReason": {"userComment": "talked about it already"},
                "outcomeTimestamp": "2024-03-01",
            },
            {"card": "00000000-0000-0000-0000-000000000000", "outcome": "overridden"},
        ]
    }
    url = f"{k.SERVICE_URL}/feedback"
    ok = cds.post(url, json=feedback, headers={"Authorization": f"Bearer {k.sign(key, aud=url)}"})
    refused = cds.post(url, json=feedback)

    assert (ok.status_code, refused.status_code) == (200, 401)
    snapshot = CDS_COUNTERS.snapshot()
    assert snapshot.feedback == {
        ("alliance-patient-view", "srs-below-cutoff", "accepted"): 1,
        ("alliance-patient-view", "srs-drop", "overridden"): 1,
        ("alliance-patient-view", "unknown", "overridden"): 1,
    }
    assert snapshot.cards == {
        ("alliance-patient-view", "srs-below-cutoff"): 1,
        ("alliance-patient-view", "srs-drop"): 1,
    }
