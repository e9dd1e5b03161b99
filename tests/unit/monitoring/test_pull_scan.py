"""The pull's full scan for servers without ``_lastUpdated``/``_sort``: a local watermark."""

from __future__ import annotations

from typing import Any

from alliance_fhir.monitoring.pull import changed_since, scan_params


def _qr(rid: str, updated: str | None) -> dict[str, Any]:
    meta = {"lastUpdated": updated} if updated else {}
    return {"resourceType": "QuestionnaireResponse", "id": rid, "meta": meta}


def test_scan_asks_for_our_questionnaires_in_pages_of_fifty_without_sort_or_since() -> None:
    assert scan_params(["https://x/Q/a", "https://x/Q/b"]) == {
        "questionnaire": "https://x/Q/a,https://x/Q/b",
        "_count": "50",
    }


def test_changed_since_keeps_what_a_lastupdated_search_would_oldest_first() -> None:
    scanned = [
        _qr("new", "2026-03-02T10:00:00+01:00"),
        _qr("old", "2026-03-01T08:59:59Z"),
        _qr("edge", "2026-03-01T09:00:00Z"),
        _qr("unknown", None),
    ]
    kept = changed_since(scanned, "2026-03-01T09:00:00Z")
    assert [r["id"] for r in kept] == ["unknown", "edge", "new"]
    assert [r["id"] for r in changed_since(scanned, None)] == ["unknown", "old", "edge", "new"]
