"""Writes: the headers a server needs, results a sync can record, and which bundles retry."""

from __future__ import annotations

import json

import httpx
import pytest
from fhirkit import fhir_json, sequence

from alliance_fhir.exceptions import RetriableError
from alliance_fhir.fhir import FHIR_JSON, EncodedJson, bundle_is_idempotent, entry_results

GOAL = {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active"}


def test_create_sends_fhir_headers_and_parses_location(make_client) -> None:
    client, rec = make_client(
        sequence(
            fhir_json(
                201,
                {**GOAL, "meta": {"versionId": "1"}},
                Location="https://fhir.example.org/fhir/Goal/g1/_history/1",
                ETag='W/"1"',
            )
        )
    )
    result = client.create({"resourceType": "Goal", "lifecycleStatus": "active"})
    sent = rec.requests[0]
    assert sent.method == "POST"
    assert sent.url.path == "/fhir/Goal"
    assert sent.headers["Accept"] == FHIR_JSON
    assert sent.headers["Content-Type"] == FHIR_JSON
    assert sent.headers["Prefer"] == "return=representation"
    assert sent.headers["User-Agent"].startswith("alliance-fhir/")
    assert "X-Request-Id" in sent.headers
    assert json.loads(sent.content) == {"resourceType": "Goal", "lifecycleStatus": "active"}
    assert result.created
    assert (result.resource_id, result.version_id, result.etag) == ("g1", "1", 'W/"1"')
    assert result.resource is not None
    assert result.outcome is None


def test_conditional_update_puts_to_type_with_query(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, {**GOAL, "meta": {"versionId": "2"}})))
    result = client.update(
        GOAL, conditional={"identifier": "http://x|goal-1"}, headers={"Cache-Control": "no-cache"}
    )
    sent = rec.requests[0]
    assert sent.method == "PUT"
    assert sent.url.path == "/fhir/Goal"
    assert sent.url.params["identifier"] == "http://x|goal-1"
    assert sent.headers["Cache-Control"] == "no-cache"
    assert result.version_id == "2"
    assert not result.created


def test_update_passes_etag_through(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, GOAL)))
    client.update(GOAL, if_match='W/"7"', return_representation=False)
    assert rec.requests[0].headers["If-Match"] == 'W/"7"'
    assert "Prefer" not in rec.requests[0].headers


def test_vread_and_extra_headers(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, {**GOAL, "meta": {"versionId": "3"}})))
    result = client.vread("Goal", "g1", "3")
    assert rec.requests[0].url.path == "/fhir/Goal/g1/_history/3"
    assert result.version_id == "3"
    assert result.etag == 'W/"3"'


def test_delete_conditional(make_client) -> None:
    client, rec = make_client(sequence(httpx.Response(204)))
    result = client.delete("Flag", conditional="identifier=http://x|f1")
    assert result.status == 204
    assert rec.requests[0].method == "DELETE"
    assert rec.requests[0].url.params["identifier"] == "http://x|f1"


CONDITIONAL_TX = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {
            "resource": GOAL,
            "request": {"method": "POST", "url": "Goal", "ifNoneExist": "identifier=x|1"},
        },
        {"resource": GOAL, "request": {"method": "PUT", "url": "Goal?identifier=x|2"}},
        {"request": {"method": "DELETE", "url": "Flag/f1"}},
    ],
}
PLAIN_TX = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [{"resource": GOAL, "request": {"method": "POST", "url": "Goal"}}],
}
TX_RESPONSE = {
    "resourceType": "Bundle",
    "type": "transaction-response",
    "entry": [
        {"response": {"status": "201 Created", "location": "Goal/g9/_history/1", "etag": 'W/"1"'}},
        {"response": {"status": "200 OK", "location": "Goal/g2/_history/5"}},
        {
            "response": {
                "status": "204 No Content",
                "outcome": {"resourceType": "OperationOutcome", "issue": []},
            }
        },
    ],
}


def test_conditional_transaction_is_retried(make_client) -> None:
    assert bundle_is_idempotent(CONDITIONAL_TX)
    client, rec = make_client(sequence(fhir_json(503), fhir_json(200, TX_RESPONSE)))
    response = client.transaction(CONDITIONAL_TX)
    assert len(rec.requests) == 2
    assert rec.requests[0].url.path == "/fhir/"
    results = entry_results(response)
    assert [r.status for r in results] == [201, 200, 204]
    assert [r.resource_id for r in results] == ["g9", "g2", None]
    assert results[0].version_id == "1"
    assert results[1].version_id == "5"
    assert results[2].outcome is not None


def test_a_bundle_encoded_ahead_is_sent_as_encoded_on_every_attempt(make_client) -> None:
    """A sync encodes its next bundle while the connections are busy: the bytes sent, on the
    first attempt and on a retry, are that encoding, the same as encoding at send time."""
    ahead = EncodedJson(CONDITIONAL_TX)
    client, rec = make_client(
        sequence(fhir_json(503), fhir_json(200, TX_RESPONSE), fhir_json(200, TX_RESPONSE))
    )
    client.transaction(ahead)
    client.transaction(CONDITIONAL_TX)
    first, retried, plain = (r.content for r in rec.requests)
    assert first == retried == ahead.content == plain
    assert json.loads(first) == CONDITIONAL_TX


def test_plain_transaction_is_not_retried_unless_flagged(make_client) -> None:
    assert not bundle_is_idempotent(PLAIN_TX)
    client, rec = make_client(sequence(fhir_json(503), fhir_json(200, TX_RESPONSE)))
    with pytest.raises(RetriableError):
        client.transaction(PLAIN_TX)
    assert len(rec.requests) == 1
    client.transaction(PLAIN_TX, idempotent=True)
    assert len(rec.requests) == 2


def test_batch_requires_batch_bundle(make_client) -> None:
    from alliance_fhir.exceptions import InvalidInputError

    client, rec = make_client(sequence(fhir_json(200, TX_RESPONSE)))
    with pytest.raises(InvalidInputError):
        client.batch(PLAIN_TX)
    assert rec.requests == []
    client.batch({**PLAIN_TX, "type": "batch"})
    assert len(rec.requests) == 1


def test_generic_request_for_operations(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(200, {"resourceType": "Parameters"})))
    response = client.request("POST", "Questionnaire/$validate", body={"resourceType": "x"})
    assert response.status == 200
    assert response.body == {"resourceType": "Parameters"}
    assert rec.requests[0].url.path == "/fhir/Questionnaire/$validate"


def test_client_is_a_context_manager(make_client) -> None:
    client, _ = make_client(sequence(fhir_json(200, {})))
    with client as c:
        assert c is client
        assert "fhir.example.org" in repr(c)
