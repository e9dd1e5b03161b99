"""Which way the monitor pulls (``app.response_pull``): ``$export`` only where the server
declares it and the count is over ``bulk_threshold``; paged search otherwise, also when the
server will not count. The ``$export`` way itself runs against HAPI in
tests/integration/test_bulk_export_integration.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from alliance_fhir.app.response_pull import pull_responses
from alliance_fhir.config import Settings
from alliance_fhir.fhir import Capabilities, FhirClient

BASE = "https://fhir.example.org/fhir"
URLS = ["http://alliance-fhir.org/fhir/Questionnaire/srs"]


def _caps(*operations: str) -> Capabilities:
    return Capabilities.from_statement(
        {
            "resourceType": "CapabilityStatement",
            "rest": [
                {
                    "mode": "server",
                    "operation": [{"name": n} for n in operations],
                    "resource": [
                        {
                            "type": "QuestionnaireResponse",
                            "searchParam": [{"name": "_lastUpdated"}, {"name": "questionnaire"}],
                        }
                    ],
                }
            ],
        }
    )


def _json(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body).encode(), headers={"Content-Type": "application/fhir+json"}
    )


@pytest.mark.parametrize(
    ("caps", "count", "threshold", "reason", "counted"),
    [
        (_caps(), 50_000, 10, "the server offers no $export", False),
        (_caps("export"), 10, 10, "10 to pull, bulk_threshold 10", True),
        (_caps("export"), None, 0, "uncounted, bulk_threshold 0", True),
    ],
)
def test_paged_search_unless_export_is_offered_and_the_pull_is_large(
    caps: Capabilities, count: int | None, threshold: int, reason: str, counted: bool
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert "$export" not in request.url.path
        if request.url.params.get("_summary") == "count":
            if count is None:
                return _json(400, {"resourceType": "OperationOutcome", "issue": []})
            return _json(200, {"resourceType": "Bundle", "type": "searchset", "total": count})
        qr = {"resourceType": "QuestionnaireResponse", "id": "1", "meta": {}}
        return _json(200, {"resourceType": "Bundle", "entry": [{"resource": qr}]})

    settings = Settings(server_url=BASE, bulk_threshold=threshold)
    with FhirClient(BASE, transport=httpx.MockTransport(handler)) as client:
        pulled = pull_responses(client, URLS, "2026-11-01T00:00:00Z", settings, caps)
    assert pulled.describe() == f"pulled via paged search ({reason})"
    assert [r["id"] for r in pulled.resources] == ["1"]
    assert pulled.problems == []
    assert any(r.url.params.get("_summary") == "count" for r in seen) is counted
