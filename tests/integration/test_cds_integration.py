"""The CDS Hooks service against the real HAPI server after the example clinic is synced and
monitored (`make demo`'s path): MRN-1003 gets cards, MRN-1001 none, whether the EHR
prefetches (its templates run against HAPI, as an EHR would) or the service fetches with the
fhirAuthorization token; the cards name the rules the monitor raised alerts for."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import CdsIssuer, Settings
from alliance_fhir.web.cds import routes

from .clinickit import PHI

with warnings.catch_warnings():
    # starlette announces a future switch of its test client's HTTP library; not ours to act on
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` lives beside `src`: the EHR's side of a call is there
    sys.path.insert(0, str(REPO))

from bench.cds_ehr import EhrKey, Jwks, call, serve_jwks, sign  # noqa: E402

MRN = "http://example-clinic.org/mrn"
NS = "http://alliance-fhir.org/fhir/identifier"
PUBLIC = "https://alliance.clinic.example.org"
SERVICE = f"{PUBLIC}/cds-services/alliance-patient-view"
ISSUER = "https://ehr.example.org"
NO_CACHE = {"Cache-Control": "no-cache"}


@pytest.fixture
def synced(fhir_base_url: str, published_clinic: Path, tmp_path: Path) -> Path:
    """The example clinic pushed and monitored, as `make demo` leaves it."""
    # a generous timeout: the shared test machine's HAPI can take long over a transaction
    settings = Settings(
        server_url=fhir_base_url, state_path=tmp_path / "state.sqlite3", timeout_seconds=180
    )
    with AllianceFhir(settings) as api:
        assert api.push_assessments([published_clinic / "clinic" / "assessments"]).ok
        assert api.push_goals([published_clinic / "goals"]).ok
        assert api.monitor(all_patients=True).ok
    return published_clinic


@pytest.fixture
def ehr_key() -> EhrKey:
    return EhrKey.make("RS384")


@pytest.fixture
def cds(fhir_base_url: str, ehr_key: EhrKey, tmp_path: Path) -> Iterator[TestClient]:
    """Our CDS routes in a small app, trusting the EHR key served from a loopback JWKS."""
    with serve_jwks(Jwks([ehr_key])) as jwks:
        settings = Settings(
            server_url=fhir_base_url,
            state_path=tmp_path / "cds.sqlite3",
            cds_public_url=PUBLIC,
            cds_issuers={ISSUER: CdsIssuer(jwks_url=jwks.url, fhir_servers=[fhir_base_url])},
            cds_allow_loopback_http=True,
        )
        yield TestClient(Starlette(routes=routes(settings)), base_url=PUBLIC)


def _patient_id(http: httpx.Client, mrn: str) -> str:
    found = http.get("/Patient", params={"identifier": f"{MRN}|{mrn}"}, headers=NO_CACHE).json()
    return str(found["entry"][0]["resource"]["id"])


def _prefetch(http: httpx.Client, templates: dict[str, str], patient_id: str) -> dict[str, Any]:
    """What an EHR sends: each template with the context filled in, run on its server."""
    out = {}
    for key, template in templates.items():
        resp = http.get(
            "/" + template.replace("{{context.patientId}}", patient_id), headers=NO_CACHE
        )
        assert resp.status_code == 200, (key, resp.status_code)
        out[key] = resp.json()
    return out


def _open_alert_rules(http: httpx.Client, patient_id: str) -> set[str]:
    flags = http.get(
        "/Flag",
        params={"identifier": f"{NS}/alert-flag|", "subject": f"Patient/{patient_id}"},
        headers=NO_CACHE,
    ).json()
    return {
        e["resource"]["identifier"][0]["value"].split(":")[0]
        for e in flags.get("entry") or []
        if e["resource"]["status"] == "active"
    }


def _rules_of(cards: list[dict[str, Any]]) -> set[str]:
    return {m.group(1) for c in cards if (m := re.search(r"rule `([^`]+)`", c["detail"]))}


def _cards(cds: TestClient, key: EhrKey, body: dict[str, Any]) -> list[dict[str, Any]]:
    resp = cds.post(
        "/cds-services/alliance-patient-view",
        json=body,
        headers={"Authorization": f"Bearer {sign(key, aud=SERVICE, iss=ISSUER)}"},
    )
    assert resp.status_code == 200, resp.text
    cards: list[dict[str, Any]] = resp.json()["cards"]
    return cards


def test_after_the_demo_mrn_1003_gets_cards_and_mrn_1001_none_with_prefetch_or_fetch(
    synced: Path,
    cds: TestClient,
    ehr_key: EhrKey,
    fhir_http: httpx.Client,
    fhir_base_url: str,
) -> None:
    templates = cds.get("/cds-services").json()["services"][0]["prefetch"]
    falling, steady = _patient_id(fhir_http, "MRN-1003"), _patient_id(fhir_http, "MRN-1001")
    seen: dict[str, list[list[dict[str, Any]]]] = {}
    for patient in (falling, steady):
        prefetched = call(patient, prefetch=_prefetch(fhir_http, templates, patient))
        fetched = call(patient, fhir_server=fhir_base_url, token="ehr-issued-access-token")
        seen[patient] = [_cards(cds, ehr_key, prefetched), _cards(cds, ehr_key, fetched)]

    with_prefetch, with_fetch = seen[falling]
    assert len(with_prefetch) >= 1
    assert [c["summary"] for c in with_fetch] == [c["summary"] for c in with_prefetch]
    assert seen[steady] == [[], []]
    # the same rules as the monitor: a card for every alert it keeps open, and no other
    assert _rules_of(with_prefetch) == _open_alert_rules(fhir_http, falling)
    for card in with_prefetch:
        assert len(card["summary"]) <= 140
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        assert card["links"] == [
            {"label": "Open the alliance view", "url": f"{PUBLIC}/launch", "type": "smart"}
        ]
        assert [p for p in PHI if p in str(card)] == []


def test_data_the_fhir_server_cannot_give_is_412_not_an_empty_answer(
    cds: TestClient, ehr_key: EhrKey, fhir_base_url: str
) -> None:
    unknown = call("does-not-exist", fhir_server=fhir_base_url, token="t")
    elsewhere = call("1", fhir_server=fhir_base_url.replace("/fhir", "/other/fhir"), token="t")
    for body in (unknown, elsewhere):
        resp = cds.post(
            "/cds-services/alliance-patient-view",
            json=body,
            headers={"Authorization": f"Bearer {sign(ehr_key, aud=SERVICE, iss=ISSUER)}"},
        )
        assert resp.status_code == 412, resp.text
