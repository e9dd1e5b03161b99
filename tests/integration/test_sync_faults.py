"""Faults a real server cannot produce on demand, injected in front of the real server.

The transport below forwards to the real HAPI server but, per a script, answers some
transaction requests itself (429 with Retry-After, 503) or forwards one and then loses the
response (the server committed; the client sees a reset). In every case the run ends with
exactly the expected resources on the server: no duplicates, nothing missing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from .clinickit import make_api


class FlakyTransport(httpx.HTTPTransport):
    def __init__(self, script: list[str]) -> None:
        super().__init__()
        self.script = list(script)
        self.injected: list[str] = []
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        is_bundle_post = request.method == "POST" and request.url.path.rstrip("/").endswith("/fhir")
        action = None
        if is_bundle_post:
            with self._lock:
                action = self.script.pop(0) if self.script else None
                if action:
                    self.injected.append(action)
        if action == "503":
            return httpx.Response(503, text="overloaded")
        if action == "429":
            return httpx.Response(429, headers={"Retry-After": "1"}, text="slow down")
        response = super().handle_request(request)
        if action == "lost":
            response.read()
            response.close()
            raise httpx.RemoteProtocolError("peer closed connection mid-body", request=request)
        return response


def _count(http: httpx.Client, rtype: str) -> int:
    resp = http.get(
        f"/{rtype}", params={"_summary": "count"}, headers={"Cache-Control": "no-cache"}
    )
    resp.raise_for_status()
    return int(resp.json()["total"])


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(["429", "503", "503"], id="rate-limited-then-overloaded"),
        pytest.param(["lost", "503"], id="response-lost-after-commit"),
        pytest.param(["503", "lost", "lost", "429"], id="mixed"),
    ],
)
def test_retried_transactions_end_with_exactly_the_expected_resources(
    script: list[str],
    fhir_base_url: str,
    published_clinic: Path,
    fhir_http: httpx.Client,
    tmp_path: Path,
) -> None:
    examples = published_clinic
    inputs = [examples / "clinic" / "assessments"]
    flaky = FlakyTransport(script)
    with make_api(fhir_base_url, tmp_path / "s.sqlite3", flaky) as api:
        records = api.assessment_records(inputs)
        expected_qr = sum(1 for r in records.desired if r.kind == "assessment")
        expected_obs = sum(1 for r in records.desired if r.kind == "score")
        report = api.push_assessments(inputs)
        assert report.ok, report.result and report.result.failures
        assert flaky.injected == script  # every fault really happened
        again = api.push_assessments(inputs)
    assert _count(fhir_http, "QuestionnaireResponse") == expected_qr
    assert _count(fhir_http, "Observation") == expected_obs
    assert again.result is not None
    assert again.result.counts["unchanged"] == expected_qr + expected_obs
