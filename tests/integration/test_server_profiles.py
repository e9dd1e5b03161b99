"""EHR-like profiles of the test server, proven with raw HTTP (issue #13, item 8).

Every profile is mounted at ``/profiles/<name>/fhir`` of the suite's server, so these
tests need no server of their own. Each test pins one behaviour a client will meet on a
real EHR, and each profile's CapabilityStatement must say what the profile does.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from alliance_fhir.fhir import (
    Capabilities,
    FhirClient,
    missing_capabilities,
    statement_to_write,
)

FHIR_JSON = "application/fhir+json"
JSON_HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
MRN = "http://example.org/alliance-fhir/test-mrn"
PROFILES = ["full", "batch-only", "single-only", "no-conditional", "no-etag", "restricted"]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120.0, headers=JSON_HEADERS) as client:
        yield client


def _mrn() -> str:
    return f"MRN-{uuid.uuid4().hex[:12]}"


def _patient(mrn: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}]}


def _questionnaire() -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "url": f"http://example.org/alliance-fhir/Questionnaire/{uuid.uuid4().hex[:8]}",
        "status": "active",
    }


def _flag(patient_ref: str) -> dict[str, Any]:
    return {
        "resourceType": "Flag",
        "status": "active",
        "code": {"text": "Alliance rupture"},
        "subject": {"reference": patient_ref},
    }


def _bundle(kind: str, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post_entry(resource: dict[str, Any], if_none_exist: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
    if if_none_exist is not None:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": request}


def _count_by_mrn(http: httpx.Client, base: str, mrn: str) -> int:
    resp = http.get(
        f"{base}/Patient",
        params={"identifier": f"{MRN}|{mrn}", "_total": "accurate"},
        headers={"Cache-Control": "no-cache"},
    )
    assert resp.status_code == 200, resp.text
    return int(resp.json()["total"])


def _assert_outcome(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert resp.json()["resourceType"] == "OperationOutcome"


def _metadata(http: httpx.Client, base: str) -> dict[str, Any]:
    resp = http.get(f"{base}/metadata")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def _system_interactions(statement: dict[str, Any]) -> set[str]:
    return {i["code"] for i in statement["rest"][0].get("interaction", [])}


def _resource(statement: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in statement["rest"][0]["resource"] if r["type"] == kind)
    return found


def _type_interactions(statement: dict[str, Any], kind: str) -> set[str]:
    return {i["code"] for i in _resource(statement, kind).get("interaction", [])}


def _search_params(statement: dict[str, Any], kind: str) -> set[str]:
    return {p["name"] for p in _resource(statement, kind).get("searchParam", [])}


# ---------------------------------------------------------------- bundles


def test_batch_only_refuses_transaction_and_accepts_batch(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("batch-only")
    mrn = _mrn()
    refused = http.post(base, json=_bundle("transaction", _post_entry(_patient(mrn))))
    _assert_outcome(refused, 405)
    accepted = http.post(base, json=_bundle("batch", _post_entry(_patient(mrn))))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["entry"][0]["response"]["status"].startswith("201")
    assert _count_by_mrn(http, base, mrn) == 1


def test_single_only_refuses_both_bundle_kinds_and_accepts_single_requests(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("single-only")
    mrn = _mrn()
    for kind in ("transaction", "batch"):
        _assert_outcome(http.post(base, json=_bundle(kind, _post_entry(_patient(mrn)))), 405)
    assert _count_by_mrn(http, base, mrn) == 0
    assert http.post(f"{base}/Patient", json=_patient(mrn)).status_code == 201
    assert _count_by_mrn(http, base, mrn) == 1


# ---------------------------------------------------------------- conditionals


def test_no_conditional_ignores_if_none_exist_so_duplicates_happen(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("no-conditional")
    mrn = _mrn()
    headers = {"If-None-Exist": f"identifier={MRN}|{mrn}"}
    first = http.post(f"{base}/Patient", json=_patient(mrn), headers=headers)
    second = http.post(f"{base}/Patient", json=_patient(mrn), headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]
    assert _count_by_mrn(http, base, mrn) == 2


def test_no_conditional_ignores_if_none_exist_inside_bundles(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("no-conditional")
    mrn = _mrn()
    condition = f"identifier={MRN}|{mrn}"
    for kind in ("transaction", "batch"):
        resp = http.post(base, json=_bundle(kind, _post_entry(_patient(mrn), condition)))
        assert resp.status_code == 200, resp.text
        assert resp.json()["entry"][0]["response"]["status"].startswith("201")
    assert _count_by_mrn(http, base, mrn) == 2


def test_full_profile_still_honours_if_none_exist(
    http: httpx.Client, fhir_profile_url: Callable[[str], str], fhir_base_url: str
) -> None:
    mrn = _mrn()
    headers = {"If-None-Exist": f"identifier={MRN}|{mrn}"}
    for base in (fhir_base_url, fhir_profile_url("full")):
        resp = http.post(f"{base}/Patient", json=_patient(mrn), headers=headers)
        assert resp.status_code in (200, 201), resp.text
    assert _count_by_mrn(http, fhir_base_url, mrn) == 1


def test_no_conditional_refuses_conditional_update_plain_and_in_bundles(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("no-conditional")
    mrn = _mrn()
    url = f"Patient?identifier={MRN}|{mrn}"
    _assert_outcome(http.put(f"{base}/{url}", json=_patient(mrn)), 405)
    entry = {"resource": _patient(mrn), "request": {"method": "PUT", "url": url}}
    _assert_outcome(http.post(base, json=_bundle("transaction", entry)), 405)
    batch = http.post(base, json=_bundle("batch", entry, _post_entry(_patient(_mrn()))))
    assert batch.status_code == 200, batch.text
    assert [e["response"]["status"][:3] for e in batch.json()["entry"]] == ["405", "201"]
    assert _count_by_mrn(http, base, mrn) == 0


# ---------------------------------------------------------------- versions


def test_no_etag_answers_carry_no_version(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("no-etag")
    mrn = _mrn()
    created = http.post(f"{base}/Patient", json=_patient(mrn))
    assert created.status_code == 201, created.text
    assert "etag" not in created.headers
    assert "_history" not in created.headers["location"]
    assert "versionId" not in created.json().get("meta", {})
    pid = created.json()["id"]

    read = http.get(f"{base}/Patient/{pid}")
    assert read.status_code == 200
    assert "etag" not in read.headers
    assert "versionId" not in read.json().get("meta", {})

    found = http.get(f"{base}/Patient", params={"identifier": f"{MRN}|{mrn}"}).json()
    assert [e["resource"].get("meta", {}).get("versionId") for e in found["entry"]] == [None]

    resp = http.post(base, json=_bundle("transaction", _post_entry(_patient(_mrn()))))
    assert resp.status_code == 200, resp.text
    answer = resp.json()["entry"][0]["response"]
    assert "etag" not in answer
    assert "_history" not in answer["location"]


def test_no_etag_ignores_if_match(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("no-etag")
    mrn = _mrn()
    pid = http.post(f"{base}/Patient", json=_patient(mrn)).json()["id"]
    stale = {"If-Match": 'W/"99"'}
    body = {**_patient(mrn), "id": pid, "active": True}
    updated = http.put(f"{base}/Patient/{pid}", json=body, headers=stale)
    assert updated.status_code == 200, updated.text
    entry = {
        "resource": {**body, "active": False},
        "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"99"'},
    }
    resp = http.post(base, json=_bundle("transaction", entry))
    assert resp.status_code == 200, resp.text
    assert http.get(f"{base}/Patient/{pid}").json()["active"] is False


def test_full_profile_still_refuses_stale_if_match(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("full")
    mrn = _mrn()
    created = http.post(f"{base}/Patient", json=_patient(mrn))
    assert created.headers["etag"] == 'W/"1"'
    pid = created.json()["id"]
    body = {**_patient(mrn), "id": pid}
    resp = http.put(f"{base}/Patient/{pid}", json=body, headers={"If-Match": 'W/"99"'})
    assert resp.status_code == 412, resp.text


# ---------------------------------------------------------------- restricted


def test_restricted_refuses_writes_of_restricted_types(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("restricted")
    _assert_outcome(http.post(f"{base}/Questionnaire", json=_questionnaire()), 405)
    qid = f"q-{uuid.uuid4().hex[:8]}"
    _assert_outcome(
        http.put(f"{base}/Questionnaire/{qid}", json={**_questionnaire(), "id": qid}), 405
    )
    _assert_outcome(
        http.post(
            f"{base}/CodeSystem",
            json={"resourceType": "CodeSystem", "status": "active", "content": "complete"},
        ),
        405,
    )
    _assert_outcome(http.delete(f"{base}/Flag/{qid}"), 405)
    # a transaction holding one restricted write fails whole
    mrn = _mrn()
    resp = http.post(
        base,
        json=_bundle("transaction", _post_entry(_patient(mrn)), _post_entry(_questionnaire())),
    )
    _assert_outcome(resp, 405)
    assert _count_by_mrn(http, base, mrn) == 0


def test_restricted_refuses_restricted_entries_of_a_batch_one_by_one(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("restricted")
    mrn = _mrn()
    pid = http.post(f"{base}/Patient", json=_patient(mrn)).json()["id"]
    resp = http.post(
        base,
        json=_bundle("batch", _post_entry(_flag(f"Patient/{pid}")), _post_entry(_patient(_mrn()))),
    )
    assert resp.status_code == 200, resp.text
    statuses = [e["response"]["status"][:3] for e in resp.json()["entry"]]
    assert statuses == ["405", "201"]
    flags = http.get(f"{base}/Flag", params={"subject": f"Patient/{pid}"}).json()
    assert flags["total"] == 0


def test_restricted_caps_count_at_50_with_next_link(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("restricted")
    tag = uuid.uuid4().hex[:12]
    entries = [_post_entry({"resourceType": "Basic", "code": {"text": tag}}) for _ in range(60)]
    assert http.post(base, json=_bundle("batch", *entries)).status_code == 200
    page = http.get(f"{base}/Basic", params={"code:text": tag, "_count": "200"}).json()
    assert len(page["entry"]) == 50
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert next_url.startswith(base)
    rest = http.get(next_url).json()
    assert len(rest["entry"]) == 10


def test_restricted_refuses_sort_and_questionnaire_response_last_updated(
    http: httpx.Client, fhir_profile_url: Callable[[str], str]
) -> None:
    base = fhir_profile_url("restricted")
    _assert_outcome(http.get(f"{base}/Patient", params={"_sort": "-_lastUpdated"}), 400)
    _assert_outcome(
        http.get(f"{base}/QuestionnaireResponse", params={"_lastUpdated": "gt2020-01-01"}), 400
    )
    other = http.get(f"{base}/Observation", params={"_lastUpdated": "gt2020-01-01"})
    assert other.status_code == 200, other.text


# ---------------------------------------------------------------- statements


def test_every_profile_statement_tells_the_truth(
    http: httpx.Client, fhir_profile_url: Callable[[str], str], fhir_base_url: str
) -> None:
    statements = {name: _metadata(http, fhir_profile_url(name)) for name in PROFILES}
    default = _metadata(http, fhir_base_url)
    for name in ("full", "no-conditional", "no-etag", "restricted"):
        assert "transaction" in _system_interactions(statements[name]), name
    assert _system_interactions(default) == _system_interactions(statements["full"])
    assert {"transaction", "batch"} & _system_interactions(statements["batch-only"]) == {"batch"}
    assert not {"transaction", "batch"} & _system_interactions(statements["single-only"])

    for name, statement in [("default", default), *statements.items()]:
        patient = _resource(statement, "Patient")
        honours = name != "no-conditional"
        assert patient.get("conditionalCreate") is honours, name
        assert patient.get("conditionalUpdate") is honours, name
        versioning = "no-version" if name == "no-etag" else "versioned-update"
        assert patient.get("versioning") == versioning, name

    restricted = statements["restricted"]
    for kind in ("CodeSystem", "Questionnaire", "Flag"):
        assert not {"create", "update", "patch", "delete"} & _type_interactions(restricted, kind)
        assert {"create", "update"} <= _type_interactions(statements["full"], kind)
    assert {"create", "update"} <= _type_interactions(restricted, "Task")
    assert "_lastUpdated" not in _search_params(restricted, "QuestionnaireResponse")
    assert "_lastUpdated" in _search_params(restricted, "Observation")
    assert "_lastUpdated" in _search_params(statements["full"], "QuestionnaireResponse")


def test_start_with_unknown_profile_fails_with_clear_message(
    fhir_server_script: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    result = fhir_server_script("start", "--port", "8999", "--profile", "bogus", timeout=60)
    assert result.returncode == 1
    assert "unknown profile: 'bogus'" in result.stderr
    assert "batch-only" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", [*PROFILES, "no-validation"])
def test_the_cut_statement_a_sync_reads_says_what_the_whole_one_says(
    http: httpx.Client, fhir_profile_url: Callable[[str], str], name: str
) -> None:
    """A sync asks /metadata for the elements it reads only (``statement_to_write``): on
    every profile that is one request, and it decides exactly what the whole statement
    decides (write mode, types, conditionals, versioning, search parameters, blockers)."""
    base = fhir_profile_url(name)
    whole = _metadata(http, base)
    requests: list[str] = []

    class Counting(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            requests.append(str(request.url))
            return super().handle_request(request)

    with FhirClient(base, transport=Counting(), timeout=120.0) as client:
        cut = statement_to_write(client)
    assert len(requests) == 1, requests
    assert "_elements=" in requests[0]
    assert len(json.dumps(cut)) * 5 < len(json.dumps(whole))  # the point: a fraction
    assert Capabilities.from_statement(cut) == Capabilities.from_statement(whole)
    assert missing_capabilities(cut, require_conditional=True) == missing_capabilities(
        whole, require_conditional=True
    )
