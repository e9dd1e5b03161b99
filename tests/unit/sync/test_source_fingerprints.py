"""Source fingerprints without a server: the state store's block and the context hash.

(Every way a file can change is tested end to end against HAPI in
tests/integration/test_source_fingerprints.py.)
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import alliance_fhir
from alliance_fhir.app.fingerprints import context_hash, file_sha256
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.state import SCHEMA_VERSION, StateStore
from alliance_fhir.sync.state.sources import SourceFingerprint

REPO = Path(__file__).resolve().parents[3]


def _fingerprint(key: str = "k1") -> SourceFingerprint:
    return SourceFingerprint(
        path_key=key,
        size=10,
        mtime_ns=123,
        inode=7,
        sha256="ab" * 32,
        context="cd" * 32,
        records=(("assessment", "a1", "h1", 4), ("score", "a1", "h2", None)),
        notes=(("left out: x",), ("not scored: y",)),
    )


def test_fingerprints_round_trip_with_their_records_and_notes(state_store: StateStore) -> None:
    """On SQLite and on PostgreSQL."""
    store = state_store
    store.save_source_fingerprints([_fingerprint()])
    assert store.source_fingerprints() == {"k1": _fingerprint()}
    store.forget_source_fingerprints(["k1"])
    assert store.source_fingerprints() == {}


def test_a_store_from_before_fingerprints_gains_the_table_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with StateStore(path) as store:
        store.record(
            kind="assessment",
            key="a1",
            resource_type="QuestionnaireResponse",
            server_id="1",
            version_id="1",
            content_hash="h1",
            status="synced",
            run_id="r",
        )
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE source_files")
        db.execute("DELETE FROM schema_migrations WHERE version IN (4, 6, 7)")  # its columns
        db.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with StateStore(path) as store:
        assert store.source_fingerprints() == {}
        store.save_source_fingerprints([_fingerprint()])
        assert store.synced_hashes() == {("assessment", "a1"): "h1"}
    with sqlite3.connect(path) as db:
        [(version,)] = db.execute("SELECT value FROM meta WHERE key='schema_version'")
    assert version == str(SCHEMA_VERSION)  # every later migration ran too


def test_only_records_in_sync_count_as_synced(state_store: StateStore) -> None:
    """On SQLite and on PostgreSQL."""
    store = state_store
    for key, status, server_id, chash in (
        ("ok", "synced", "1", "h"),
        ("no-id", "synced", None, "h"),
        ("found", "synced", "2", None),  # found by identifier, content not compared yet
        ("theirs", "conflict", "3", "h"),
        ("refused", "rejected", "4", "h"),
        ("lettered", "synced", "5", "h"),
    ):
        store.record(
            kind="assessment",
            key=key,
            resource_type="QuestionnaireResponse",
            server_id=server_id,
            version_id="1",
            content_hash=chash,
            status=status,
            run_id="r",
        )
    store.dead_letter(
        run_id="r",
        kind="assessment",
        key="lettered",
        resource_type="QuestionnaireResponse",
        reason="refused",
        http_status=422,
        outcome=None,
    )
    assert store.synced_hashes() == {("assessment", "ok"): "h"}


def test_the_last_runs_figures_are_kept(state_store: StateStore) -> None:
    """On SQLite and on PostgreSQL."""
    store = state_store
    assert store.source_figures() == {}
    store.set_source_figures({"files": 3, "skipped": 2})
    store.set_source_figures({"files": 4, "skipped": 4})
    assert store.source_figures() == {"files": 4, "skipped": 4}


def test_the_context_hash_follows_what_changes_a_files_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library = load_library()
    base = Settings(state_path=tmp_path / "s.sqlite3")
    first = context_hash(library, base)
    assert context_hash(load_library(), Settings(state_path=tmp_path / "other")) == first
    others = {
        context_hash(library, base, labels_only=True),
        context_hash(library, base.model_copy(update={"identifier_namespace": "urn:x:ns"})),
        context_hash(library, base.model_copy(update={"canonical_base": "urn:x:base"})),
        context_hash(library, base.model_copy(update={"patient_map": {"Patient/1": "s|v"}})),
    }
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    (overlays / "srs.yaml").write_text("wording: 1\n")
    with_overlay = base.model_copy(update={"overlay_dir": overlays})
    others.add(context_hash(library, with_overlay))
    (overlays / "srs.yaml").write_text("wording: 2\n")
    others.add(context_hash(library, with_overlay))
    clinic = tmp_path / "clinic"
    clinic.mkdir()
    text = (REPO / "mappings" / "instruments" / "srs.yaml").read_text()
    (clinic / "srs.yaml").write_text(text.replace("\ntitle: ", "\ntitle: Clinic ", 1))
    others.add(context_hash(load_library([clinic]), base))
    monkeypatch.setattr(alliance_fhir, "__version__", "99.0.0")
    others.add(context_hash(library, base))
    assert first not in others
    assert len(others) == 8


def test_file_sha256_is_of_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
