"""Tenants (#17): state is partitioned by tenant, on SQLite (a file each) and PostgreSQL (a
schema each, migrated on its own): one tenant's records, dead letters, fingerprints and runs
are never visible to another."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.sync.state import SCHEMA_VERSION, StateStore
from alliance_fhir.sync.state.sources import SourceFingerprint
from alliance_fhir.tenants import all_tenant_settings
from pgkit import Cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def two_tenants(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Settings]]:
    """Two tenants' settings over one top-level state store configuration."""
    for name in ("ALLIANCE_FHIR_TENANT", "ALLIANCE_FHIR_STATE_URL", "ALLIANCE_FHIR_STATE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    suffix = secrets.token_hex(4)
    a, b = f"a-{suffix}", f"b-{suffix}"
    config = tmp_path / "alliance-fhir.toml"
    top = f'state_path = "{tmp_path}/state/state.sqlite3"\n'
    cluster: Cluster | None = None
    if request.param == "postgresql":
        cluster = request.getfixturevalue("postgres")
        top += f'state_url = "{cluster.url}"\n'
        if cluster.password is not None:
            monkeypatch.setenv("ALLIANCE_FHIR_STATE_PASSWORD", cluster.password)
    config.write_text(f"{top}[tenants.{a}]\n[tenants.{b}]\n", encoding="utf-8")
    tenants = all_tenant_settings(load_settings(config))
    yield tenants[a], tenants[b]
    if cluster is not None:
        for tenant in tenants.values():
            assert tenant.state_schema is not None
            cluster.drop_schema(tenant.state_schema)


def _fill(store: StateStore, key: str) -> None:
    store.start_run(f"run-{key}", "sync")
    store.record(
        kind="assessment",
        key=key,
        resource_type="QuestionnaireResponse",
        server_id=f"qr-{key}",
        version_id="1",
        content_hash="h",
        status="synced",
        run_id=f"run-{key}",
    )
    store.dead_letter(
        run_id=f"run-{key}",
        kind="goal",
        key=f"plan-{key}",
        resource_type="Goal",
        reason="refused",
        http_status=422,
        outcome=None,
    )
    store.save_source_fingerprints(
        [
            SourceFingerprint(
                path_key=f"/in/{key}.csv",
                sha256="0" * 64,
                size=1,
                mtime_ns=1,
                inode=1,
                context="c",
                records=(("assessment", key, "h", None),),
            )
        ]
    )
    store.set_watermark("monitor", f"2026-01-01-{key}")
    store.finish_run(f"run-{key}", "ok", {"created": 1})


def test_each_tenant_sees_only_its_own_state(two_tenants: tuple[Settings, Settings]) -> None:
    a_settings, b_settings = two_tenants
    with AllianceFhir(a_settings) as a, AllianceFhir(b_settings) as b:
        _fill(a.store, "only-a")
        _fill(b.store, "only-b")

        for mine, other, store in (("only-a", "only-b", a.store), ("only-b", "only-a", b.store)):
            assert list(store.all_records()) == [("assessment", mine)]
            assert [d.key for d in store.open_dead_letters()] == [f"plan-{mine}"]
            assert list(store.source_fingerprints()) == [f"/in/{mine}.csv"]
            assert store.watermark("monitor") == f"2026-01-01-{mine}"
            assert [r.run_id for r in store.recent_runs()] == [f"run-{mine}"]
            assert store.get("assessment", other) is None


def test_each_tenant_store_is_migrated_on_its_own(two_tenants: tuple[Settings, Settings]) -> None:
    for settings in two_tenants:
        with AllianceFhir(settings) as api:
            rows = api.store._db.execute("SELECT MAX(version) FROM schema_migrations").fetchall()
            assert rows[0][0] == SCHEMA_VERSION
            if settings.effective_state_url.startswith("postgresql"):
                shown = api.store._db.execute("SELECT current_schema()").fetchall()
                assert shown[0][0] == settings.state_schema
            else:
                assert Path(settings.state_path).is_file()
                assert settings.tenant is not None
                assert settings.state_path.name == f"state.{settings.tenant}.sqlite3"
