"""Tenants (#17): ``[tenants.NAME]`` sections, what a tenant inherits and what it never does,
its secrets, names that are refused, and ``--tenant`` / ``ALLIANCE_FHIR_TENANT`` on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clikit import Run

from alliance_fhir.config import load_settings
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.tenants import all_tenant_settings, select_tenant, tenant_settings

TWO_TENANTS = """
server_url = "https://top.example.org/fhir"
identifier_namespace = "https://top.example.org/id"
bundle_size = 50
auth = "bearer"
token_file = "top-token"

[tenants.clinic-a]
server_url = "https://a.example.org/fhir"
identifier_namespace = "https://a.example.org/id"
token_file = "a-token"
assessments = ["a-exports"]

[tenants.clinic-b]
server_url = "https://b.example.org/fhir"
max_connections = 3
"""


@pytest.fixture(autouse=True)
def _no_tenant_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ALLIANCE_FHIR_TENANT",
        "ALLIANCE_FHIR_TOKEN",
        "ALLIANCE_FHIR_TENANT_CLINIC_A_TOKEN",
        "ALLIANCE_FHIR_TENANT_CLINIC_B_TOKEN",
        "ALLIANCE_FHIR_STATE_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)


def _config(tmp_path: Path, text: str = TWO_TENANTS) -> Path:
    path = tmp_path / "alliance-fhir.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_tenant_inherits_the_top_level_and_overrides_what_it_names(tmp_path: Path) -> None:
    root = load_settings(_config(tmp_path))
    a = tenant_settings(root, "clinic-a")
    b = tenant_settings(root, "clinic-b")

    assert (a.server_url, a.identifier_namespace) == (
        "https://a.example.org/fhir",
        "https://a.example.org/id",
    )
    assert (b.server_url, b.identifier_namespace) == (
        "https://b.example.org/fhir",
        "https://top.example.org/id",
    )
    assert a.bundle_size == b.bundle_size == 50
    assert a.assessments == [Path("a-exports")]
    assert b.assessments == []
    assert (a.max_connections, b.max_connections) == (None, 3)
    assert (a.tenant, b.tenant) == ("clinic-a", "clinic-b")


def test_state_and_inbox_are_partitioned_by_tenant(tmp_path: Path) -> None:
    root = load_settings(_config(tmp_path))
    a, b = all_tenant_settings(root).values()

    assert a.state_path == Path(".alliance-fhir/state.clinic-a.sqlite3")
    assert b.state_path == Path(".alliance-fhir/state.clinic-b.sqlite3")
    assert a.effective_state_url == "sqlite:///.alliance-fhir/state.clinic-a.sqlite3"
    assert (a.state_schema, b.state_schema) == ("tenant_clinic_a", "tenant_clinic_b")
    assert (a.inbox_dir, b.inbox_dir) == (
        Path(".alliance-fhir/inbox/clinic-a"),
        Path(".alliance-fhir/inbox/clinic-b"),
    )


def test_a_top_level_sqlite_state_url_gives_each_tenant_a_file_beside_it(tmp_path: Path) -> None:
    path = _config(tmp_path, 'state_url = "sqlite:////srv/af/state.db"\n[tenants.x]\n[tenants.y]\n')
    tenants = all_tenant_settings(load_settings(path))

    assert [t.effective_state_url for t in tenants.values()] == [
        "sqlite:////srv/af/state.x.db",
        "sqlite:////srv/af/state.y.db",
    ]


def test_a_tenant_on_postgresql_gets_its_own_schema_and_the_top_level_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PASSWORD", "pg-top-secret")
    path = _config(
        tmp_path,
        'state_url = "postgresql://af@db.example.org/alliance"\n[tenants.x]\n'
        '[tenants.y]\nstate_url = "postgresql://af@other.example.org/alliance"\n',
    )
    x, y = all_tenant_settings(load_settings(path)).values()

    assert x.effective_state_url == "postgresql://af@db.example.org/alliance"
    assert x.state_schema == "tenant_x"
    assert x.secret("state_password") == "pg-top-secret"
    # another database: the top level's password is not sent there
    assert y.secret("state_password") is None


def test_fhir_credentials_are_never_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "top-token").write_text("top-token-value")
    (tmp_path / "a-token").write_text("a-token-value")
    for name in ("top-token", "a-token"):
        (tmp_path / name).chmod(0o600)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "top-env-token")
    root = load_settings(_config(tmp_path))
    a = tenant_settings(root, "clinic-a")
    b = tenant_settings(root, "clinic-b")

    assert root.secret("token") == "top-env-token"
    assert a.secret("token") == "a-token-value"  # its own file, not the top level's env
    assert b.secret("token") is None
    assert b.token_file is None
    monkeypatch.setenv("ALLIANCE_FHIR_TENANT_CLINIC_B_TOKEN", "b-env-token")
    assert tenant_settings(root, "clinic-b").secret("token") == "b-env-token"


def test_a_tenant_without_its_token_is_told_its_own_variable(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "top-env-token")
    _config(tmp_path)

    result = run("--tenant", "clinic-b", "publish", "--labels-only")

    assert result.code == 2
    assert result.err.strip() == (
        "error: auth=bearer needs ALLIANCE_FHIR_TENANT_CLINIC_B_TOKEN or token_file"
    )


@pytest.mark.parametrize("name", ["Clinic", "clinic_a", "-a", "a-", "a.b", "x" * 33])
def test_a_tenant_name_that_is_not_a_slug_is_refused_naming_its_section(
    run: Run, tmp_path: Path, name: str
) -> None:
    _config(tmp_path, f'[tenants."{name}"]\nserver_url = "https://a.example.org/fhir"\n')

    result = run("status")

    assert result.code == 2
    assert f"[tenants.{name}]: not a tenant name" in result.err


def test_a_secret_in_a_tenant_section_is_refused_with_where_it_goes(
    run: Run, tmp_path: Path
) -> None:
    _config(tmp_path, '[tenants.clinic-a]\ntoken = "s3cr3t-value"\n')

    result = run("status")

    assert result.code == 2
    assert "[tenants.clinic-a] token is a secret" in result.err
    assert "ALLIANCE_FHIR_TENANT_CLINIC_A_TOKEN or token_file" in result.err
    assert "s3cr3t-value" not in result.err + result.out


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("metrics_port = 9999", "[tenants.a]: metrics_port applies to the whole process"),
        ("colour = 1", "[tenants.a]: colour: Extra inputs are not permitted"),
        ('server_url = "ftp://x"', "[tenants.a]: server_url: Value error, must be an absolute"),
        ('state_path = "one.sqlite3"', "[tenants.a] and [tenants.b] share one state store"),
        ('inbox_dir = "in"', "[tenants.a] and [tenants.b] share one inbox"),
    ],
)
def test_a_bad_tenant_section_is_a_configuration_error(
    tmp_path: Path, section: str, expected: str
) -> None:
    path = _config(tmp_path, f"[tenants.a]\n{section}\n[tenants.b]\n{section}\n")

    with pytest.raises(ConfigError) as caught:
        select_tenant(load_settings(path))

    assert expected in str(caught.value)


def test_a_config_without_tenants_is_as_before(tmp_path: Path) -> None:
    path = _config(tmp_path, 'server_url = "https://top.example.org/fhir"\n')
    root = load_settings(path)

    assert select_tenant(root) is root
    assert (root.tenants, root.tenant, root.state_schema) == ({}, None, None)


def test_commands_on_one_server_need_a_tenant_and_name_them(run: Run, tmp_path: Path) -> None:
    _config(tmp_path)
    (tmp_path / "plans.yaml").write_text("")

    for args in (("monitor",), ("push", "goals", "plans.yaml"), ("publish",), ("sync",)):
        result = run(*args)
        assert result.code == 2, args
        assert result.err.strip() == (
            "error: 2 tenants are configured (clinic-a, clinic-b): choose one with "
            "--tenant NAME or ALLIANCE_FHIR_TENANT"
        )


def test_unknown_or_needless_tenant_selection_exits_2(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path)
    monkeypatch.setenv("ALLIANCE_FHIR_TENANT", "clinic-c")
    result = run("status")
    assert result.code == 2
    assert result.err.strip() == (
        "error: tenant 'clinic-c' is not configured; tenants: clinic-a, clinic-b"
    )

    _config(tmp_path, 'server_url = "https://top.example.org/fhir"\n')
    monkeypatch.delenv("ALLIANCE_FHIR_TENANT")
    result = run("--tenant", "clinic-a", "status")
    assert result.code == 2
    assert "no [tenants.*] sections" in result.err


def test_status_reports_each_tenant_and_tenant_selects_one(run: Run, tmp_path: Path) -> None:
    _config(tmp_path)

    every = run("status")
    one = run("--tenant", "clinic-b", "status")

    assert every.code == 0, every.err
    assert [line for line in every.out.splitlines() if line.startswith("tenant:")] == [
        "tenant: clinic-a",
        "tenant: clinic-b",
    ]
    assert every.out.count("dead letters: 0") == 2
    assert one.code == 0
    assert "tenant:" not in one.out
    assert "dead letters: 0" in one.out
    assert sorted(p.name for p in (tmp_path / ".alliance-fhir").iterdir()) == [
        "state.clinic-a.sqlite3",
        "state.clinic-b.sqlite3",
    ]


def test_config_show_with_a_tenant_prints_its_effective_settings(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config(tmp_path)
    top = json.loads(run("config", "show").out)
    monkeypatch.setenv("ALLIANCE_FHIR_TENANT", "clinic-a")

    shown = json.loads(run("config", "show").out)

    assert shown["server_url"] == "https://a.example.org/fhir"
    assert shown["tenant"] == "clinic-a"
    assert shown["token_file"] == "a-token"
    assert top["server_url"] == "https://top.example.org/fhir"
    assert sorted(top["tenants"]) == ["clinic-a", "clinic-b"]


def test_help_names_the_tenant_option(run: Run) -> None:
    result = run("--help")

    assert "--tenant TEXT" in result.out
    assert "$ALLIANCE_FHIR_TENANT" in result.out


def test_the_python_api_opens_one_tenant_or_every_tenant(tmp_path: Path) -> None:
    from alliance_fhir.api.tenants import open_tenant, open_tenants

    root = load_settings(_config(tmp_path))
    with open_tenant(root, "clinic-b") as api:
        assert api.settings.server_url == "https://b.example.org/fhir"
    apis = open_tenants(root)
    assert {n: a.settings.identifier_namespace for n, a in apis.items()} == {
        "clinic-a": "https://a.example.org/id",
        "clinic-b": "https://top.example.org/id",
    }
    with pytest.raises(ConfigError, match="tenant 'clinic-c' is not configured"):
        open_tenant(root, "clinic-c")
