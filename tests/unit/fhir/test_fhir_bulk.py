"""The Bulk Data client (``fhir.bulk``) against a MockTransport: what a real server cannot
be made to do on demand (an HTTP-date Retry-After, a file on another host, a broken line,
an error file, a job that never finishes). The happy path against HAPI is in
tests/integration/test_bulk_export_integration.py."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fhirkit import BASE, FakeTime, Recorder, fhir_json

from alliance_fhir.exceptions import FatalError
from alliance_fhir.fhir import BearerTokenAuth, Capabilities, FhirClient, Secret
from alliance_fhir.fhir.bulk import BulkExport, ExportRequest, PollPolicy, progress_summary

STATUS = f"{BASE}/$export-poll-status?_jobId=job-1"
TOKEN = "tok-bulk-123"
QR = "QuestionnaireResponse"


def _qr(n: int) -> dict[str, Any]:
    return {"resourceType": QR, "id": f"qr{n}", "status": "completed"}


def _ndjson(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


class Server:
    """A scripted Bulk Data server: kick-off, ``pending`` 202 polls, then the manifest."""

    def __init__(self, manifest: dict[str, Any], files: dict[str, bytes], *polls: httpx.Response):
        self.manifest = manifest
        self.files = files
        self.polls = list(polls)
        self.deleted = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/$export"):
            return httpx.Response(202, headers={"Content-Location": STATUS})
        if path.endswith("/$export-poll-status"):
            if request.method == "DELETE":
                self.deleted += 1
                return httpx.Response(202)
            return self.polls.pop(0) if self.polls else fhir_json(200, self.manifest)
        if str(request.url) in self.files:
            return httpx.Response(
                200,
                content=self.files[str(request.url)],
                headers={"Content-Type": "application/fhir+ndjson"},
            )
        return fhir_json(404, {"resourceType": "OperationOutcome", "issue": []})


def _manifest(
    *output: tuple[str, str], errors: tuple[str, ...] = (), token: bool = True
) -> dict[str, Any]:
    return {
        "transactionTime": "2026-11-29T10:00:00Z",
        "request": f"{BASE}/$export",
        "requiresAccessToken": token,
        "output": [{"type": t, "url": u} for t, u in output],
        "error": [{"type": "OperationOutcome", "url": u} for u in errors],
    }


@pytest.fixture
def bulk(
    make_client: Callable[..., tuple[FhirClient, Recorder]], fake_time: FakeTime
) -> Callable[..., tuple[BulkExport, Recorder]]:
    def make(server: Server, policy: PollPolicy | None = None) -> tuple[BulkExport, Recorder]:
        client, recorder = make_client(server, auth=BearerTokenAuth(Secret(TOKEN)))
        job = BulkExport(
            client,
            ExportRequest(
                types=(QR,), since="2026-11-01T00:00:00Z", type_filters=(f"{QR}?questionnaire=x",)
            ),
            policy=policy or PollPolicy(floor_seconds=1, cap_seconds=30, default_seconds=2),
            sleep=fake_time.sleep,
            clock=fake_time.monotonic,
            wall=lambda: datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC).timestamp(),
        )
        return job, recorder

    return make


def test_a_whole_export_kicks_off_polls_streams_and_deletes(
    bulk: Callable[..., tuple[BulkExport, Recorder]], fake_time: FakeTime, log_output: io.StringIO
) -> None:
    later = format_datetime(datetime(2026, 11, 29, 10, 0, 7, tzinfo=UTC), usegmt=True)
    server = Server(
        _manifest((QR, f"{BASE}/Binary/f1"), (QR, f"{BASE}/Binary/f2")),
        {
            f"{BASE}/Binary/f1": _ndjson(json.dumps(_qr(1)), json.dumps(_qr(2))),
            f"{BASE}/Binary/f2": _ndjson(json.dumps(_qr(3))),
        },
        httpx.Response(202, headers={"Retry-After": "120", "X-Progress": "45% of Jane Roe"}),
        httpx.Response(202, headers={"Retry-After": later, "X-Progress": "IN_PROGRESS"}),
        httpx.Response(202),
        httpx.Response(202, headers={"Retry-After": "0"}),
    )
    job, recorder = bulk(server)
    with job:
        manifest = job.wait()
        ids = [r["id"] for r in job.resources(manifest)]
    assert ids == ["qr1", "qr2", "qr3"]
    assert job.problems == []
    # Retry-After 120 capped at 30; an HTTP date 7 s ahead; none -> 2; 0 -> the 1 s floor
    assert fake_time.sleeps == [30, 7, 2, 1]
    assert server.deleted == 1
    kick = recorder.requests[0]
    assert kick.headers["Prefer"] == "respond-async"
    assert kick.headers["Accept"] == "application/fhir+json"
    assert kick.url.params.get_list("_type") == [QR]
    assert kick.url.params["_since"] == "2026-11-01T00:00:00Z"
    assert kick.url.params["_typeFilter"] == f"{QR}?questionnaire=x"
    downloads = [r for r in recorder.requests if "/Binary/" in r.url.path]
    assert [r.headers["Authorization"] for r in downloads] == [f"Bearer {TOKEN}"] * 2
    assert all(r.headers["Accept"] == "application/fhir+ndjson" for r in downloads)
    logged = log_output.getvalue()
    assert '"progress": "45%"' in logged
    assert '"progress": "IN_PROGRESS"' in logged
    assert "Jane" not in logged


def test_a_bad_line_is_named_by_file_and_line_and_the_rest_goes_on(
    bulk: Callable[..., tuple[BulkExport, Recorder]],
) -> None:
    server = Server(
        _manifest((QR, f"{BASE}/Binary/f1"), (QR, f"{BASE}/Binary/f2")),
        {
            f"{BASE}/Binary/f1": _ndjson(json.dumps(_qr(1)), '{"resourceType": "Questionn'),
            f"{BASE}/Binary/f2": _ndjson("", "[1, 2]", json.dumps(_qr(2)), '{"id": "x"}')
            + b"\xff\xfe\n"
            + json.dumps(_qr(3)).encode(),
        },
    )
    job, _ = bulk(server)
    with job:
        ids = [r["id"] for r in job.resources(job.wait())]
    assert ids == ["qr1", "qr2", "qr3"]
    assert [str(p) for p in job.problems] == [
        "$export output file 1, line 2: not JSON: Unterminated string starting at (column 18)",
        "$export output file 2, line 2: not a JSON object",
        "$export output file 2, line 4: no resourceType",
        "$export output file 2, line 5: not UTF-8 (byte 1)",
    ]
    assert server.deleted == 1


def test_error_files_are_reported_by_code_and_path_not_text(
    bulk: Callable[..., tuple[BulkExport, Recorder]],
) -> None:
    issue = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": "Patient Jane Roe failed",
                "expression": ["QuestionnaireResponse.subject"],
            }
        ],
    }
    server = Server(
        _manifest(errors=(f"{BASE}/Binary/e1",)),
        {f"{BASE}/Binary/e1": _ndjson(json.dumps(issue), "not json")},
    )
    job, _ = bulk(server)
    with job:
        manifest = job.wait()
        issues = [str(i) for i in job.issues(manifest)]
    assert issues == [
        "$export error file 1, line 1: error processing at QuestionnaireResponse.subject",
        "$export error file 1, line 2: error not JSON: Expecting value (column 1)",
    ]


def test_a_file_on_another_host_is_refused_by_host_and_the_job_deleted(
    bulk: Callable[..., tuple[BulkExport, Recorder]],
) -> None:
    elsewhere = "https://files.example.net/exports/f1?sig=secret-signature"
    server = Server(_manifest((QR, elsewhere)), {elsewhere: _ndjson(json.dumps(_qr(1)))})
    job, recorder = bulk(server)
    with pytest.raises(FatalError) as caught, job:
        list(job.resources(job.wait()))
    message = str(caught.value)
    assert "output file 1 is on another origin (https://files.example.net)" in message
    assert "secret-signature" not in message
    assert not any(r.url.host == "files.example.net" for r in recorder.requests)
    assert server.deleted == 1


def test_no_token_goes_with_the_files_when_the_manifest_needs_none(
    bulk: Callable[..., tuple[BulkExport, Recorder]],
) -> None:
    server = Server(
        _manifest((QR, f"{BASE}/Binary/f1"), token=False),
        {f"{BASE}/Binary/f1": _ndjson(json.dumps(_qr(1)))},
    )
    job, recorder = bulk(server)
    with job:
        assert len(list(job.resources(job.wait()))) == 1
    download = next(r for r in recorder.requests if "/Binary/" in r.url.path)
    assert "Authorization" not in download.headers


def test_a_job_that_never_finishes_times_out_and_is_deleted(
    bulk: Callable[..., tuple[BulkExport, Recorder]], fake_time: FakeTime
) -> None:
    server = Server(_manifest(), {}, *[httpx.Response(202, headers={"Retry-After": "10"})] * 50)
    job, _ = bulk(server, PollPolicy(floor_seconds=1, cap_seconds=10, timeout_seconds=35))
    with pytest.raises(FatalError, match=r"\$export did not finish within 35 s"), job:
        job.wait()
    assert fake_time.sleeps == [10, 10, 10]
    assert server.deleted == 1


def test_a_kick_off_without_202_and_content_location_is_an_error(
    bulk: Callable[..., tuple[BulkExport, Recorder]],
) -> None:
    server = Server(_manifest(), {})
    job, recorder = bulk(server)
    recorder.handler = lambda request: fhir_json(200, {"resourceType": "Bundle"})
    with pytest.raises(FatalError, match="kick-off answered 200 without Content-Location"), job:
        job.wait()
    assert server.deleted == 0  # no job was made, so nothing to delete


def test_a_file_is_read_line_by_line_not_whole(
    bulk: Callable[..., tuple[BulkExport, Recorder]],
) -> None:
    produced: list[int] = []

    class Chunks(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for n in range(1, 201):
                produced.append(n)
                line = json.dumps(_qr(n)).encode() + b"\n"
                yield line[:10]
                yield line[10:]

    files_url = f"{BASE}/Binary/big"
    server = Server(_manifest((QR, files_url)), {})
    job, recorder = bulk(server)

    def handler(request: httpx.Request) -> httpx.Response:
        if str(request.url) == files_url:
            return httpx.Response(200, stream=Chunks())
        return server(request)

    recorder.handler = handler
    with job:
        stream = job.resources(job.wait())
        first = next(stream)
        assert first["id"] == "qr1"
        assert len(produced) <= 2  # the other 198 lines have not even been produced yet
        assert sum(1 for _ in stream) == 199


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        ("45%", "45%"),
        ("Build in progress - Status set to IN_PROGRESS at 2026-11-29", "IN_PROGRESS"),
        ("3 of 10 files, Jane Roe", "3of10"),
        ("exporting John's records", None),
        (None, None),
    ],
)
def test_progress_is_logged_as_numbers_and_states_only(
    text: str | None, logged: str | None
) -> None:
    assert progress_summary(text) == logged


def test_export_is_offered_only_where_the_statement_declares_it() -> None:
    def statement(*names: str) -> dict[str, Any]:
        ops = [{"name": n, "definition": f"http://example.org/{n}"} for n in names]
        return {
            "resourceType": "CapabilityStatement",
            "rest": [{"mode": "server", "operation": ops}],
        }

    assert Capabilities.from_statement(statement("export", "expunge")).operation("export")
    assert Capabilities.from_statement(statement("$export")).operation("export")
    assert not Capabilities.from_statement(statement("export-poll-status")).operation("export")
    assert not Capabilities.unknown().operation("export")
