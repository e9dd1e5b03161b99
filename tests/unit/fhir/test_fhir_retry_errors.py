"""Error mapping and retries: what a sync job sees when the server is busy, slow or says no."""

from __future__ import annotations

import email.utils
import json

import httpx
import pytest
from fhirkit import FakeTime, fhir_json, outcome, sequence

from alliance_fhir.exceptions import (
    ConflictError,
    FatalError,
    RetriableError,
    ServerRejectedError,
)
from alliance_fhir.fhir import RetryPolicy, parse_retry_after

PATIENT = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "4"}}
GOAL = {"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active"}


def test_429_with_retry_after_then_success(make_client, fake_time: FakeTime) -> None:
    client, rec = make_client(
        sequence(
            fhir_json(429, outcome("slow down"), Retry_After="7"),
            fhir_json(200, PATIENT, ETag='W/"4"'),
        )
    )
    result = client.read("Patient", "p1")
    assert result.resource["id"] == "p1"
    assert result.version_id == "4"
    assert result.etag == 'W/"4"'
    assert len(rec.requests) == 2
    assert len(fake_time.sleeps) == 1
    assert fake_time.sleeps[0] >= 7


def test_burst_of_503_ends_in_success(make_client, fake_time: FakeTime) -> None:
    client, rec = make_client(
        sequence(fhir_json(503), fhir_json(503), fhir_json(503), fhir_json(200, PATIENT))
    )
    assert client.read("Patient", "p1").resource == PATIENT
    assert len(rec.requests) == 4
    assert len(fake_time.sleeps) == 3
    # exponential growth with equal jitter: attempt n waits within [b*2^(n-1)/2, b*2^(n-1)]
    for n, slept in enumerate(fake_time.sleeps, start=1):
        ceiling = 0.5 * 2 ** (n - 1)
        assert ceiling / 2 <= slept <= ceiling


def test_plain_post_is_not_retried_on_503(make_client, fake_time: FakeTime) -> None:
    client, rec = make_client(sequence(fhir_json(503), fhir_json(201, GOAL)))
    with pytest.raises(RetriableError) as err:
        client.create({"resourceType": "Goal", "lifecycleStatus": "active"})
    assert err.value.status == 503
    assert len(rec.requests) == 1
    assert fake_time.sleeps == []


def test_conditional_post_is_retried(make_client) -> None:
    client, rec = make_client(
        sequence(fhir_json(503), fhir_json(201, GOAL, Location=f"{'x'}/Goal/g1/_history/1"))
    )
    result = client.create(GOAL, if_none_exist="identifier=http://x|1")
    assert result.created
    assert result.resource_id == "g1"
    assert result.version_id == "1"
    assert len(rec.requests) == 2
    assert all(r.headers["If-None-Exist"] == "identifier=http://x|1" for r in rec.requests)


def test_retries_stop_at_deadline(make_client, fake_time: FakeTime) -> None:
    policy = RetryPolicy(max_attempts=1000, base_delay=1, max_delay=10, deadline=30)
    client, rec = make_client(sequence(fhir_json(503)), retry=policy)
    start = fake_time.now
    with pytest.raises(RetriableError) as err:
        client.read("Patient", "p1")
    assert err.value.status == 503
    assert fake_time.now - start <= 30
    assert sum(fake_time.sleeps) <= 30
    assert len(rec.requests) == len(fake_time.sleeps) + 1
    assert len(rec.requests) > 3


def test_retry_after_beyond_deadline_fails_fast_with_retry_after(
    make_client, fake_time: FakeTime
) -> None:
    client, rec = make_client(sequence(fhir_json(429, Retry_After="600")))
    with pytest.raises(RetriableError) as err:
        client.read("Patient", "p1")
    assert err.value.retry_after == 600
    assert len(rec.requests) == 1
    assert fake_time.sleeps == []


def test_max_attempts_bounds_retries(make_client, fake_time: FakeTime) -> None:
    client, rec = make_client(sequence(fhir_json(502)), retry=RetryPolicy(max_attempts=3))
    with pytest.raises(RetriableError):
        client.read("Patient", "p1")
    assert len(rec.requests) == 3


def test_timeouts_and_resets_are_retried_for_reads(make_client) -> None:
    client, rec = make_client(
        sequence(
            httpx.ReadTimeout("timed out"),
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.ConnectError("Connection refused"),
            fhir_json(200, PATIENT),
        )
    )
    assert client.read("Patient", "p1").resource == PATIENT
    assert len(rec.requests) == 4


def test_timeout_on_plain_post_is_retriable_but_not_retried(make_client) -> None:
    client, rec = make_client(sequence(httpx.ReadTimeout("timed out")))
    with pytest.raises(RetriableError) as err:
        client.create(GOAL)
    assert err.value.status is None
    assert err.value.method == "POST"
    assert len(rec.requests) == 1


def test_412_is_conflict_and_if_match_is_sent(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(412, outcome("version conflict"))))
    with pytest.raises(ConflictError) as err:
        client.update(GOAL, if_match="3")
    assert err.value.status == 412
    assert rec.requests[0].headers["If-Match"] == 'W/"3"'
    assert rec.requests[0].method == "PUT"
    assert rec.requests[0].url.path == "/fhir/Goal/g1"


def test_409_is_conflict(make_client) -> None:
    client, _ = make_client(sequence(fhir_json(409)))
    with pytest.raises(ConflictError):
        client.update(GOAL)


def test_400_carries_operation_outcome_and_no_query(make_client) -> None:
    client, _ = make_client(
        sequence(fhir_json(400, outcome("Goal.lifecycleStatus: unknown code 'done'")))
    )
    with pytest.raises(ServerRejectedError) as err:
        client.update(GOAL, conditional="identifier=http://x|secret-mrn-123")
    exc = err.value
    assert "unknown code 'done'" not in str(exc)  # may echo PHI: not in messages or logs
    assert exc.server_text() == ["Goal.lifecycleStatus: unknown code 'done'"]
    assert exc.status == 400
    assert exc.outcome is not None
    assert exc.outcome["resourceType"] == "OperationOutcome"
    assert exc.method == "PUT"
    assert exc.url == "/fhir/Goal"
    assert "secret-mrn-123" not in str(exc)


def test_422_is_rejected(make_client) -> None:
    client, _ = make_client(sequence(fhir_json(422, outcome("bad"))))
    with pytest.raises(ServerRejectedError):
        client.create(GOAL)


@pytest.mark.parametrize("status", [401, 403, 404, 405, 410, 418])
def test_other_4xx_are_fatal(make_client, status: int) -> None:
    client, rec = make_client(sequence(fhir_json(status)))
    with pytest.raises(FatalError) as err:
        client.read("Patient", "p1")
    assert err.value.status == status
    assert len(rec.requests) == 1


def test_500_retried_for_reads_only(make_client) -> None:
    client, rec = make_client(sequence(fhir_json(500), fhir_json(200, PATIENT)))
    assert client.read("Patient", "p1").resource == PATIENT
    assert len(rec.requests) == 2

    client, rec = make_client(sequence(fhir_json(500)))
    with pytest.raises(FatalError):
        client.update(GOAL)
    assert len(rec.requests) == 1


def test_html_error_page_is_mapped_without_outcome(make_client) -> None:
    client, _ = make_client(
        sequence(httpx.Response(502, text="<html>bad gateway</html>")),
        retry=RetryPolicy(max_attempts=1),
    )
    with pytest.raises(RetriableError) as err:
        client.read("Patient", "p1")
    assert err.value.outcome is None


def test_delete_missing_is_ok_by_default(make_client) -> None:
    client, _ = make_client(sequence(fhir_json(404, outcome("gone"))))
    assert client.delete("Goal", "g1").status == 404
    with pytest.raises(FatalError):
        client.delete("Goal", "g1", missing_ok=False)


def test_retry_warning_is_logged_with_status_and_delay(make_client, log_output) -> None:
    client, _ = make_client(sequence(fhir_json(503, Retry_After="2"), fhir_json(200, PATIENT)))
    client.read("Patient", "p1")
    lines = [json.loads(line) for line in log_output.getvalue().splitlines()]
    retries = [e for e in lines if e["event"] == "fhir.retry"]
    assert len(retries) == 1
    assert retries[0]["level"] == "warning"
    assert retries[0]["status"] == 503
    assert retries[0]["delay_s"] >= 2
    requests = [e for e in lines if e["event"] == "fhir.request"]
    assert [e["attempt"] for e in requests] == [1, 2]
    assert {e["request_id"] for e in requests} == {requests[0]["request_id"]}
    assert requests[1]["status"] == 200
    assert requests[1]["interaction"] == "read"
    assert "duration_ms" in requests[1]


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("5", now=0) == 5
    assert parse_retry_after(None, now=0) is None
    assert parse_retry_after("soon", now=0) is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0
