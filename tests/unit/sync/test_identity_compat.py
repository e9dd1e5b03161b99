"""Every record of the example clinic is known by what it was known by before identities were
folded into one scheme: same conditional search, bundle group, update mode, ``urn:uuid``,
content hash and identifiers as ``tests/fixtures/identity/records.json`` (written by the code
before the change; never regenerate it to make this test pass). The only hashes allowed to
differ are the contents changed on purpose since, each listed with its before and after in
``tests/fixtures/identity/content_changes.json`` (#16: renderer hints in the Questionnaires)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.adapters.record import record_uuid
from alliance_fhir.api import AllianceFhir
from alliance_fhir.app.goal_files import read_goal_files
from alliance_fhir.app.records import goal_records, instrument_records
from alliance_fhir.config import load_settings

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO / "tests" / "fixtures" / "identity" / "records.json"
CHANGES = REPO / "tests" / "fixtures" / "identity" / "content_changes.json"


def content_changes() -> dict[tuple[str, str], dict[str, str]]:
    """(kind, key) -> {"before", "after"} hash of each record changed on purpose."""
    data = json.loads(CHANGES.read_text(encoding="utf-8"))
    return {(c["kind"], c["key"]): c for c in data["changed"]}


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default settings whatever the caller's cwd, environment or stray alliance-fhir.toml."""
    for name in list(os.environ):
        if name.startswith("ALLIANCE_FHIR_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def rows_today() -> list[dict[str, Any]]:
    """The example clinic's records, built exactly as ``make_golden.py`` builds them."""
    settings = load_settings(server_url="http://127.0.0.1:9/fhir")
    api = AllianceFhir(settings)
    records = instrument_records(api.library, settings, labels_only=True)
    records.extend(api.assessment_records([REPO / "examples" / "clinic" / "assessments"]))
    records.extend(api.goal_records([REPO / "examples" / "goals"]))
    assert records.problems == []
    rows = []
    for d in records.desired:
        idents = d.resource.get("identifier") or []
        if isinstance(idents, dict):
            idents = [idents]
        rows.append(
            {
                "kind": d.kind,
                "key": d.key,
                "search": d.search,
                "group": d.group,
                "update_mode": d.update_mode,
                "uuid": d.uuid,
                "hash": d.hash,
                "identifiers": sorted(f"{i.get('system')}|{i.get('value')}" for i in idents),
            }
        )
    return rows


@pytest.mark.usefixtures("clean_env")
def test_every_record_keeps_its_identity() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    changes = content_changes()
    today = rows_today()
    assert [(r["kind"], r["key"]) for r in today] == [(r["kind"], r["key"]) for r in golden]
    for now, before in zip(today, golden, strict=True):
        change = changes.pop((before["kind"], before["key"]), None)
        if change is not None:
            assert before["hash"] == change["before"], f"{before['kind']} {before['key']}"
            expected = {**before, "hash": change["after"]}
        else:
            expected = before
        assert now == expected, f"{before['kind']} {before['key']}"
    assert changes == {}, "content_changes.json names records that do not exist"


def test_the_documented_content_changes_are_the_questionnaires_of_16() -> None:
    assert sorted(k for k, _ in content_changes()) == ["questionnaire"] * 5


@pytest.mark.usefixtures("clean_env")
def test_goal_plan_uuids_follow_the_identifier_namespace() -> None:
    """Goal-plan kinds keep the legacy uuid (uuid5 of our identifier token), so with another
    namespace the uuids change with it and the plan's links still resolve in its bundle."""
    ns = "https://clinic.example.org/alliance-fhir/id"
    settings = load_settings(server_url="http://127.0.0.1:9/fhir", identifier_namespace=ns)
    plans, problems = read_goal_files([REPO / "examples" / "goals"])
    assert problems == []
    records = goal_records(plans, settings)
    walks = next(d for d in records.desired if d.key == "plan-1001-2024/walks")
    legacy = uuid.uuid5(uuid.NAMESPACE_URL, f"{ns}/goal|plan-1001-2024/walks")
    assert walks.uuid == f"urn:uuid:{legacy}"
    assert walks.uuid != record_uuid("goal", "plan-1001-2024/walks")
    uuids = {d.uuid for d in records.desired}
    for careplan in (d for d in records.desired if d.kind == "careplan"):
        links = [g["reference"] for g in careplan.resource["goal"]]
        assert links
        assert set(links) <= uuids


def test_other_kinds_ignore_the_namespace() -> None:
    expected = uuid.uuid5(uuid.UUID("6f1d2a4e-8c1b-5e0a-9d57-3a7f2c1b9e40"), "assessment/k1")
    assert record_uuid("assessment", "k1") == f"urn:uuid:{expected}"
    assert record_uuid("assessment", "k1", namespace="https://other.example/id") == (
        f"urn:uuid:{expected}"
    )
