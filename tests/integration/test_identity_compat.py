"""A server and state store written by the code before identities were folded into one scheme
are picked up by today's code without a single write: every record is recognised (same
conditional search, same content hash, same ``urn:uuid`` links inside the hashed resources)
and nothing is duplicated. Fixtures: ``tests/fixtures/identity`` (see its README). The one
exception is content changed on purpose since, listed in ``content_changes.json``: the five
Questionnaires (#16, renderer hints) are updated in place, exactly those and nothing else."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from alliance_fhir.adapters.identity import DEFAULT_NAMESPACE
from alliance_fhir.api import AllianceFhir, Report
from alliance_fhir.config import load_settings

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "identity"
FHIR_JSON = "application/fhir+json"
OUR_TYPES = (
    "CodeSystem",
    "Questionnaire",
    "QuestionnaireResponse",
    "Observation",
    "Goal",
    "CarePlan",
    "Flag",
    "Task",
)


def load_server(base_url: str) -> None:
    """The fixture server's content, as a transaction of PUTs with the same ids. Each entry
    gets the ``fullUrl`` the fixture leaves out: the test server's validator refuses a
    transaction entry (and the relative references inside it) without one."""
    bundle = json.loads((FIXTURES / "server.json").read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        entry.setdefault("fullUrl", f"{base_url}/{entry['request']['url']}")
    resp = httpx.post(
        base_url,
        content=json.dumps(bundle),
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        timeout=300.0,
    )
    assert resp.status_code == 200, resp.text[:2000]


def restore_state(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.executescript((FIXTURES / "state.sql").read_text(encoding="utf-8"))
    os.chmod(path, 0o600)


def writes(report: Report) -> tuple[int, int]:
    assert report.result is not None
    assert report.problems == []
    assert report.result.failures == []
    return report.result.counts["created"], report.result.counts["updated"]


def our_identifiers(base_url: str) -> Counter[str]:
    """How often each identifier of ours (and each canonical url|version) is on the server."""
    seen: Counter[str] = Counter()
    with httpx.Client(base_url=base_url, timeout=120.0, headers={"Accept": FHIR_JSON}) as http:
        for rtype in OUR_TYPES:
            url: str | None = f"{base_url}/{rtype}?_count=500"
            while url is not None:
                bundle = http.get(url).raise_for_status().json()
                for entry in bundle.get("entry") or []:
                    res = entry["resource"]
                    if res.get("url") and res.get("version"):
                        seen[f"{rtype} {res['url']}|{res['version']}"] += 1
                    idents = res.get("identifier") or []
                    # QuestionnaireResponse.identifier is one Identifier, not a list
                    for ident in [idents] if isinstance(idents, dict) else idents:
                        if str(ident.get("system", "")).startswith(DEFAULT_NAMESPACE):
                            seen[f"{rtype} {ident['system']}|{ident.get('value')}"] += 1
                url = next(
                    (
                        link["url"]
                        for link in bundle.get("link") or []
                        if link["relation"] == "next"
                    ),
                    None,
                )
    return seen


def test_state_and_server_of_the_old_code_need_no_write(
    fhir_base_url: str,
    fhir_reset: Callable[[], None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # default settings, as the fixture was produced: no stray config or environment
    for name in list(os.environ):
        if name.startswith("ALLIANCE_FHIR_") and not name.startswith("ALLIANCE_FHIR_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    load_server(fhir_base_url)
    state = tmp_path / "state.sqlite3"
    restore_state(state)
    settings = load_settings(server_url=fhir_base_url, state_path=state)
    before = our_identifiers(fhir_base_url)
    assert len(before) > 200

    changed = json.loads((FIXTURES / "content_changes.json").read_text(encoding="utf-8"))
    expected_updates = sorted(c["key"] for c in changed["changed"])

    with AllianceFhir(settings) as api:
        plan = api.engine().plan(api.instrument_records(labels_only=True).desired)
        assert sorted((a.op, a.desired.key) for a in plan.writes) == [
            ("update", key) for key in expected_updates
        ]
        assert writes(api.publish(labels_only=True)) == (0, len(expected_updates))
        assert writes(api.publish(labels_only=True)) == (0, 0)
        assert writes(api.push_assessments([REPO / "examples" / "clinic" / "assessments"])) == (
            0,
            0,
        )
        assert writes(api.push_goals([REPO / "examples" / "goals"])) == (0, 0)

    after = our_identifiers(fhir_base_url)
    assert after == before
    assert [k for k, n in after.items() if n > 1] == []
