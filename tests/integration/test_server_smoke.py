"""Smoke tests of the local HAPI FHIR R4 test server (scripts/fhir-server).

They pin down the server behaviour the rest of the integration suite relies on:
validation (strict on base R4, lenient on unknown extensions / local code systems),
conditional create/update, If-Match, transactions, client ids, expunge, persistence.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from .filedbkit import FileDbServer

ITEMS_CS = "http://example.org/alliance-fhir/CodeSystem/items"
ANSWERS_CS = "http://example.org/alliance-fhir/CodeSystem/answers"
SDC_CALCULATED = (
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
)
FHIR_JSON = "application/fhir+json"
JSON_HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _questionnaire(url: str, version: str = "1.0.0", title: str = "Mood check") -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": url,
        "version": version,
        "name": "MoodCheck",
        "title": title,
        "status": "active",
        "item": [
            {
                "linkId": "mood",
                "text": "How is your mood?",
                "type": "choice",
                "code": [{"system": ITEMS_CS, "code": "mood", "display": "Mood"}],
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/questionnaire-item-control",
                                    "code": "slider",
                                }
                            ]
                        },
                    }
                ],
                "answerOption": [
                    {
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/StructureDefinition/ordinalValue",
                                "valueDecimal": score,
                            }
                        ],
                        "valueCoding": {"system": ANSWERS_CS, "code": code, "display": display},
                    }
                    for score, code, display in (
                        (0, "low", "Low"),
                        (1, "mid", "Medium"),
                        (2, "high", "High"),
                    )
                ],
            },
            {
                "linkId": "total",
                "text": "Total score",
                "type": "decimal",
                "code": [{"system": ITEMS_CS, "code": "total"}],
                "readOnly": True,
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/questionnaire-hidden",
                        "valueBoolean": True,
                    },
                    {
                        "url": SDC_CALCULATED,
                        "valueExpression": {
                            "language": "text/fhirpath",
                            "expression": "%resource.item.where(linkId='mood')"
                            ".answer.value.ordinal()",
                        },
                    },
                ],
            },
        ],
    }


def _post(client: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post(path, json=body, headers={**JSON_HEADERS, **headers})


def _put(client: httpx.Client, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.put(path, json=body, headers={**JSON_HEADERS, **headers})


def _assert_status(resp: httpx.Response, *expected: int) -> None:
    assert resp.status_code in expected, (
        f"HTTP {resp.status_code} (expected {expected}): {resp.text[:3000]}"
    )


def _search_total(client: httpx.Client, path: str) -> int:
    # (httpx drops a URL's own query string when params= is given, so append by hand)
    sep = "&" if "?" in path else "?"
    resp = client.get(f"{path}{sep}_total=accurate", headers={"Cache-Control": "no-cache"})
    _assert_status(resp, 200)
    bundle = resp.json()
    return int(bundle.get("total", len(bundle.get("entry", []))))


def test_metadata_reports_r4(fhir_http: httpx.Client) -> None:
    resp = fhir_http.get("/metadata")
    _assert_status(resp, 200)
    cs = resp.json()
    assert cs["resourceType"] == "CapabilityStatement"
    assert cs["fhirVersion"] == "4.0.1"
    types = {r["type"] for r in cs["rest"][0]["resource"]}
    assert {
        "Questionnaire",
        "QuestionnaireResponse",
        "Goal",
        "Flag",
        "Task",
        "CarePlan",
        "Patient",
    } <= types


def test_valid_questionnaire_with_extensions_and_local_codes_is_accepted(
    fhir_http: httpx.Client, fhir_reset: Callable[[], None]
) -> None:
    url = f"http://example.org/alliance-fhir/Questionnaire/{_unique('mood')}"
    resp = _post(fhir_http, "/Questionnaire", _questionnaire(url))
    _assert_status(resp, 201)
    created = resp.json()
    assert created["id"]
    # extensions survive the round trip
    total_item = created["item"][1]
    assert {e["url"] for e in total_item["extension"]} >= {SDC_CALCULATED}

    # searchable by canonical url + version
    bundle = fhir_http.get("/Questionnaire", params={"url": url, "version": "1.0.0"}).json()
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [created["id"]]

    # conditional update by url + version updates the same resource
    resp = _put(
        fhir_http,
        f"/Questionnaire?url={url}&version=1.0.0",
        _questionnaire(url, title="Mood check v2"),
    )
    _assert_status(resp, 200)
    assert resp.json()["id"] == created["id"]
    assert resp.json()["meta"]["versionId"] == "2"

    # history holds both versions
    history = fhir_http.get(f"/Questionnaire/{created['id']}/_history").json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


@pytest.mark.parametrize(
    "resource",
    [
        {"resourceType": "Observation", "subject": {"display": "no status, no code"}},
        {"resourceType": "Questionnaire", "status": "bogus"},
    ],
    ids=["observation-missing-required", "questionnaire-bad-status"],
)
def test_invalid_resource_is_rejected(fhir_http: httpx.Client, resource: dict[str, Any]) -> None:
    resp = _post(fhir_http, f"/{resource['resourceType']}", resource)
    _assert_status(resp, 400, 422)
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["severity"] in ("error", "fatal") for i in outcome["issue"])


def test_conditional_create_by_identifier_is_idempotent(fhir_http: httpx.Client) -> None:
    value = _unique("mrn")
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://example.org/alliance-fhir/mrn", "value": value}],
        "name": [{"family": "Conditional"}],
    }
    if_none_exist = f"identifier=http://example.org/alliance-fhir/mrn|{value}"
    first = _post(fhir_http, "/Patient", patient, **{"If-None-Exist": if_none_exist})
    _assert_status(first, 201)
    second = _post(fhir_http, "/Patient", patient, **{"If-None-Exist": if_none_exist})
    _assert_status(second, 200)
    assert second.json()["id"] == first.json()["id"]
    assert (
        _search_total(
            fhir_http, f"/Patient?identifier=http://example.org/alliance-fhir/mrn|{value}"
        )
        == 1
    )

    # conditional update by identifier hits the same resource
    patient["name"] = [{"family": "Updated"}]
    resp = _put(
        fhir_http, f"/Patient?identifier=http://example.org/alliance-fhir/mrn|{value}", patient
    )
    _assert_status(resp, 200)
    assert resp.json()["id"] == first.json()["id"]


def test_stale_if_match_is_412(fhir_http: httpx.Client) -> None:
    created = _post(fhir_http, "/Patient", {"resourceType": "Patient", "active": True})
    _assert_status(created, 201)
    patient = created.json()
    pid = patient["id"]
    patient["active"] = False
    ok = _put(fhir_http, f"/Patient/{pid}", patient, **{"If-Match": 'W/"1"'})
    _assert_status(ok, 200)
    assert ok.json()["meta"]["versionId"] == "2"
    stale = _put(fhir_http, f"/Patient/{pid}", patient, **{"If-Match": 'W/"1"'})
    _assert_status(stale, 412)


def test_clinical_resources_are_accepted(fhir_http: httpx.Client) -> None:
    patient_id = _unique("pat")
    _assert_status(
        _put(fhir_http, f"/Patient/{patient_id}", {"resourceType": "Patient", "id": patient_id}),
        201,
    )
    subject = {"reference": f"Patient/{patient_id}"}
    ident = {"system": "http://example.org/alliance-fhir/ids", "value": _unique("id")}

    other_goal = _post(
        fhir_http,
        "/Goal",
        {
            "resourceType": "Goal",
            "lifecycleStatus": "active",
            "description": {"text": "Walk daily"},
            "subject": subject,
        },
    )
    _assert_status(other_goal, 201)
    goal = {
        "resourceType": "Goal",
        "identifier": [ident],
        "lifecycleStatus": "active",
        "achievementStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                    "code": "in-progress",
                }
            ]
        },
        "description": {"text": "Sleep better", "coding": [{"system": ITEMS_CS, "code": "sleep"}]},
        "subject": subject,
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/goal-acceptance",
                "extension": [
                    {"url": "individual", "valueReference": subject},
                    {"url": "status", "valueCode": "agree"},
                ],
            },
            {
                "url": "http://hl7.org/fhir/StructureDefinition/goal-relationship",
                "extension": [
                    {
                        "url": "type",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": "http://hl7.org/fhir/goal-relationship-type",
                                    "code": "predecessor",
                                }
                            ]
                        },
                    },
                    {
                        "url": "target",
                        "valueReference": {"reference": f"Goal/{other_goal.json()['id']}"},
                    },
                ],
            },
        ],
        "target": [
            {
                "measure": {"coding": [{"system": ITEMS_CS, "code": "sleep-hours"}]},
                "detailQuantity": {
                    "value": 7,
                    "unit": "h",
                    "system": "http://unitsofmeasure.org",
                    "code": "h",
                },
            }
        ],
    }
    _assert_status(_post(fhir_http, "/Goal", goal), 201)
    assert _search_total(fhir_http, f"/Goal?identifier={ident['system']}|{ident['value']}") == 1

    flag = {
        "resourceType": "Flag",
        "status": "active",
        "code": {"coding": [{"system": ITEMS_CS, "code": "risk"}], "text": "Risk"},
        "subject": subject,
    }
    _assert_status(_post(fhir_http, "/Flag", flag), 201)

    task = {
        "resourceType": "Task",
        "identifier": [ident],
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": ITEMS_CS, "code": "complete-questionnaire"}]},
        "for": subject,
        "input": [
            {
                "type": {"text": "questionnaire"},
                "valueCanonical": "http://example.org/alliance-fhir/Questionnaire/mood|1.0.0",
            }
        ],
    }
    _assert_status(_post(fhir_http, "/Task", task), 201)
    assert _search_total(fhir_http, f"/Task?identifier={ident['system']}|{ident['value']}") == 1

    careplan = {
        "resourceType": "CarePlan",
        "identifier": [ident],
        "status": "active",
        "intent": "plan",
        "subject": subject,
        "title": "Plan",
    }
    _assert_status(_post(fhir_http, "/CarePlan", careplan), 201)
    assert _search_total(fhir_http, f"/CarePlan?identifier={ident['system']}|{ident['value']}") == 1

    qr = {
        "resourceType": "QuestionnaireResponse",
        "identifier": ident,
        "questionnaire": "http://example.org/alliance-fhir/Questionnaire/mood|1.0.0",
        "status": "completed",
        "subject": subject,
        "authored": "2024-05-01T10:00:00Z",
        "item": [
            {
                "linkId": "mood",
                "answer": [
                    {"valueCoding": {"system": ANSWERS_CS, "code": "mid", "display": "Medium"}}
                ],
            },
            {"linkId": "total", "answer": [{"valueDecimal": 1}]},
        ],
    }
    _assert_status(_post(fhir_http, "/QuestionnaireResponse", qr), 201)
    assert (
        _search_total(
            fhir_http, f"/QuestionnaireResponse?identifier={ident['system']}|{ident['value']}"
        )
        == 1
    )
    assert (
        _search_total(
            fhir_http,
            f"/QuestionnaireResponse?subject=Patient/{patient_id}&_lastUpdated=gt2020-01-01",
        )
        == 1
    )


def test_transaction_with_conditional_creates_and_urn_uuid_refs(fhir_http: httpx.Client) -> None:
    mrn = _unique("mrn")
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": patient_urn,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [
                        {"system": "http://example.org/alliance-fhir/mrn", "value": mrn}
                    ],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier=http://example.org/alliance-fhir/mrn|{mrn}",
                },
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": ITEMS_CS, "code": "total"}]},
                    "subject": {"reference": patient_urn},
                    "valueInteger": 3,
                },
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    first = _post(fhir_http, "/", bundle)
    _assert_status(first, 200)
    entries = first.json()["entry"]
    assert entries[0]["response"]["status"].startswith("201")
    patient_ref = entries[0]["response"]["location"].split("/_history")[0]
    obs_ref = entries[1]["response"]["location"].split("/_history")[0]
    obs = fhir_http.get(f"/{obs_ref}").json()
    assert obs["subject"]["reference"] == patient_ref

    # replaying the bundle: the conditional create matches, only the Observation is new
    second = _post(fhir_http, "/", bundle)
    _assert_status(second, 200)
    assert second.json()["entry"][0]["response"]["status"].startswith("200")
    assert (
        _search_total(fhir_http, f"/Patient?identifier=http://example.org/alliance-fhir/mrn|{mrn}")
        == 1
    )


def test_client_assigned_ids(fhir_http: httpx.Client) -> None:
    for pid in ("abc-123", "4711"):
        resp = _put(
            fhir_http, f"/Patient/{pid}", {"resourceType": "Patient", "id": pid, "active": True}
        )
        _assert_status(resp, 200, 201)
        assert resp.json()["id"] == pid
        _assert_status(fhir_http.get(f"/Patient/{pid}"), 200)


def test_reset_expunges_everything(fhir_http: httpx.Client, fhir_reset: Callable[[], None]) -> None:
    _assert_status(
        _put(fhir_http, "/Patient/reset-me", {"resourceType": "Patient", "id": "reset-me"}), 201
    )
    fhir_reset()
    _assert_status(fhir_http.get("/Patient/reset-me"), 404, 410)
    # the same client id can be reused after the expunge
    _assert_status(
        _put(fhir_http, "/Patient/reset-me", {"resourceType": "Patient", "id": "reset-me"}), 201
    )


def _full_collections(pid: str) -> int:
    """The JVM's count of full collections so far (``jstat -gc``, column FGC)."""
    out = subprocess.run(
        ["jstat", "-gc", pid], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split("\n")
    return int(float(dict(zip(out[0].split(), out[1].split(), strict=True))["FGC"]))


def test_gc_collects_in_the_running_server_and_refuses_a_port_with_none(
    fhir_base_url: str,
    fhir_http: httpx.Client,
    fhir_server_script: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """``scripts/fhir-server gc``: the benchmarks' full collection before each measured run."""
    if os.environ.get("ALLIANCE_FHIR_TEST_SERVER") or shutil.which("jstat") is None:
        pytest.skip("needs the server started by the suite and the JDK's jstat")
    port = str(urlsplit(fhir_base_url).port)
    runtime = os.environ.get("ALLIANCE_FHIR_SERVER_RUNTIME_DIR") or (
        Path(__file__).resolve().parents[2] / ".fhir-server"
    )
    pid = (Path(runtime) / f"server-{port}.pid").read_text(encoding="utf-8").split()[0]
    before = _full_collections(pid)
    done = fhir_server_script("gc", "--port", port)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert _full_collections(pid) > before
    _assert_status(fhir_http.get("/metadata"), 200)  # still serving

    idle = fhir_server_script("gc", "--port", "1")
    assert idle.returncode == 1
    assert re.search(r"^fhir-server: not running on port 1 ", idle.stderr)


def test_file_backed_server_keeps_data_across_restart(file_db_server: FileDbServer) -> None:
    """Slow (a JVM start-up): a server with --file-db keeps data after stop/start."""
    file_db_server.start()
    base = file_db_server.base
    try:
        with httpx.Client(base_url=base, timeout=120.0) as client:
            resp = _put(
                client,
                "/Patient/persist-1",
                {"resourceType": "Patient", "id": "persist-1", "active": True},
            )
            _assert_status(resp, 201)
        assert file_db_server.stop() == 0
        assert not file_db_server.running()
        file_db_server.start()
        with httpx.Client(base_url=base, timeout=120.0) as client:
            resp = client.get("/Patient/persist-1", headers={"Accept": FHIR_JSON})
            _assert_status(resp, 200)
            assert resp.json()["active"] is True
    finally:
        file_db_server.start()  # running again for the next test, whatever happened here
