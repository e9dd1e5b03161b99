"""Helpers for the CDS Hooks tests: EHR signing keys, a JWKS served over real loopback HTTP,
signed requests shaped like the specification's examples, and score Observations built by
the same adapter sync uses."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

with warnings.catch_warnings():
    # starlette announces a future switch of its test client's HTTP library; not ours to act on
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from alliance_fhir.adapters.assessment import score_observation
from alliance_fhir.api.cds import CdsService
from alliance_fhir.assessments.check import prepare
from alliance_fhir.assessments.sources import read_records
from alliance_fhir.config import CdsIssuer, Settings
from alliance_fhir.instruments.library import load_library
from alliance_fhir.instruments.scoring import score
from alliance_fhir.web.cds import routes

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # `bench` lives beside `src`: the EHR's side of a call is there
    sys.path.insert(0, str(REPO))

from bench.cds_ehr import EhrKey, Jwks, bundle, call, serve_jwks  # noqa: E402
from bench.cds_ehr import sign as _sign  # noqa: E402

__all__ = ["EhrKey", "Jwks", "TestClient", "bundle", "call", "serve_jwks"]

CLINIC = REPO / "examples" / "clinic" / "assessments"
PUBLIC = "https://alliance.clinic.example.org"
SERVICE_URL = f"{PUBLIC}/cds-services/alliance-patient-view"
ISSUER = "https://ehr.example.org"
NS = "http://alliance-fhir.org/fhir/identifier"


def sign(
    key: EhrKey, *, aud: str | list[str] = SERVICE_URL, iss: str = ISSUER, **claims: Any
) -> str:
    """A JWT of the trusted EHR for the patient-view service (see ``bench.cds_ehr.sign``)."""
    return _sign(key, aud=aud, iss=iss, **claims)


@cache
def _library() -> dict[str, Any]:
    return {i.id: i for i in load_library()}


@cache
def _service(cfg_key: str) -> CdsService:
    """One CdsService per namespace (instruments and rules loaded once per test session)."""
    return CdsService(Settings(server_url="http://127.0.0.1:9/fhir", identifier_namespace=cfg_key))


def settings(jwks_url: str, tmp: Path, **extra: Any) -> Settings:
    issuers = {ISSUER: CdsIssuer(jwks_url=jwks_url, **extra.pop("issuer", {}))}
    values: dict[str, Any] = {
        "server_url": "http://127.0.0.1:9/fhir",
        "state_path": tmp / "state.sqlite3",
        "cds_public_url": PUBLIC,
        "cds_issuers": issuers,
        "cds_allow_loopback_http": True,
    }
    return Settings(**(values | extra))


def client(cfg: Settings, service: CdsService | None = None) -> TestClient:
    if service is None:
        shared = _service(cfg.identifier_namespace)
        service = CdsService(cfg, library=shared.library, rules=shared.rules)
    app = Starlette(routes=routes(cfg, service=service))
    return TestClient(app, base_url=PUBLIC)


def example_observations(mrn: str, patient_id: str) -> list[dict[str, Any]]:
    """The score Observations sync writes for an example client's check-ins."""
    library = _library()
    assessments, problems = read_records(CLINIC / f"{mrn.lower()}.yaml")
    assert not problems
    out = []
    for n, a in enumerate(assessments):
        inst = library[a.instrument]
        prepared = prepare(inst, a)

        def refs(system: str, value: str) -> dict[str, Any]:
            kind = "Patient" if "mrn" in system else "Practitioner"
            return {"reference": f"{kind}/{patient_id if kind == 'Patient' else 'pr1'}"}

        obs = score_observation(
            prepared,
            inst,
            score(inst, prepared.answers),
            refs=refs,
            qr_ref=f"QuestionnaireResponse/qr-{n}",
        )
        out.append({**obs, "id": f"obs-{n}"})
    return out


def prefetch_for(
    patient_id: str,
    observations: Sequence[Mapping[str, Any]],
    flags: Sequence[Mapping[str, Any]] = (),
    tasks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "patient": {"resourceType": "Patient", "id": patient_id},
        "scores": bundle(observations),
        "alertFlags": bundle(flags),
        "alertTasks": bundle(tasks),
    }


def srs_observations(
    patient_id: str, marks: Sequence[float], *, first: str = "2024-01-03", prefix: str = "s"
) -> list[dict[str, Any]]:
    """Weekly SRS score Observations (every item marked ``marks[i]``), oldest first."""
    from datetime import date, timedelta

    from alliance_fhir.assessments.model import Assessment, Identifier

    inst = _library()["srs"]
    out = []
    for n, mark in enumerate(marks):
        day = date.fromisoformat(first) + timedelta(weeks=n)
        a = Assessment(
            key=f"{prefix}-{n:02d}",
            instrument="srs",
            patient=Identifier(system="http://example-clinic.org/mrn", value="SYN"),
            authored=f"{day.isoformat()}T10:00:00+00:00",
            answers={q: str(mark) for q in ("q1", "q2", "q3", "q4")},
        )
        prepared = prepare(inst, a)
        obs = score_observation(
            prepared,
            inst,
            score(inst, prepared.answers),
            refs=lambda s, v: {"reference": f"Patient/{patient_id}"},
            qr_ref=f"QuestionnaireResponse/{prefix}-qr-{n}",
        )
        out.append({**obs, "id": f"{prefix}-obs-{n}"})
    return out


def alert(
    kind: str,
    rule_id: str,
    patient_id: str,
    *,
    status: str,
    focus: str | None = None,
    reason: str | None = None,
    priority: str = "asap",
    updated: str = "2024-03-01T10:00:00Z",
) -> dict[str, Any]:
    """One of our alert Flags (``kind="Flag"``) or Tasks, as the monitor writes them."""
    key = f"{rule_id}:{patient_id}"
    system = f"{NS}/{'alert-flag' if kind == 'Flag' else 'alert-task'}"
    res: dict[str, Any] = {
        "resourceType": kind,
        "id": f"{kind.lower()}-{rule_id}",
        "meta": {"lastUpdated": updated},
        "identifier": [{"system": system, "value": key}],
        "status": status,
    }
    text = f"On 2024-02-21 the client answered at the lowest point ({rule_id})."
    if kind == "Flag":
        res |= {
            "code": {"text": text},
            "subject": {"reference": f"Patient/{patient_id}"},
            "period": {"start": "2024-02-22T09:00:00Z"},
        }
    else:
        res |= {
            "intent": "order",
            "priority": priority,
            "description": text,
            "for": {"reference": f"Patient/{patient_id}"},
            "authoredOn": "2024-02-22T09:00:00Z",
        }
        if focus:
            res["focus"] = {"reference": focus}
        if reason:
            res["statusReason"] = {"text": reason}
    return res
