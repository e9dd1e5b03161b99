"""``state_url``: the CLI on a PostgreSQL state store, and its password kept out of the
config file, the URL, the output and the logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clikit import Run

from alliance_fhir.sync.state import open_store
from pgkit import Cluster

SECRET = "pw-7d1c0a4e9b"


@pytest.fixture
def schema(postgres: Cluster) -> Iterator[str]:
    name = postgres.new_schema()
    yield name
    postgres.drop_schema(name)


def _password_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pg-password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_status_reads_runs_and_conflicts_from_postgresql(
    run: Run, tmp_path: Path, postgres: Cluster, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert postgres.password is not None
    url = postgres.schema_url(schema)
    with open_store(url, password=postgres.password) as store:
        store.start_run("r1", "sync")
        store.finish_run("r1", "ok", {"created": 3})
        store.record(
            kind="goal",
            key="plan/walks",
            resource_type="Goal",
            server_id="g1",
            version_id="2",
            content_hash="h",
            status="conflict",
            run_id="r1",
            conflict_fields=["target"],
        )
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_URL", url)
    monkeypatch.setenv(
        "ALLIANCE_FHIR_STATE_PASSWORD_FILE", str(_password_file(tmp_path, postgres.password))
    )

    result = run("status")

    assert result.code == 0, result.err
    assert (
        "  conflict: goal/plan/walks (Goal/g1) changed on the server and by us: target; "
        "not overwritten"
    ) in result.out.splitlines()
    assert "sync" in result.out
    assert postgres.password not in result.out + result.err
    assert not Path(".alliance-fhir/state.sqlite3").exists()  # no SQLite file beside it


def test_a_wrong_password_is_one_line_without_the_password(
    run: Run, tmp_path: Path, postgres: Cluster, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_URL", postgres.schema_url(schema))
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PASSWORD", SECRET)

    result = run("status")

    assert result.code == 1
    assert result.err.startswith(
        f"error: state store postgresql://alliance@127.0.0.1:{postgres.port}/alliance is unusable: "
    )
    assert "password authentication failed" in result.err
    assert len(result.err.splitlines()) == 1
    assert SECRET not in result.out + result.err


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://alliance:{SECRET}@db.example.org/alliance",
        f"postgresql://alliance@db.example.org/alliance?password={SECRET}",
    ],
)
def test_a_password_in_the_url_is_refused_with_where_to_put_it(
    run: Run, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_URL", url)

    result = run("status")

    assert result.code == 2
    assert "state_url: Value error, must not contain a password; use state_password_file or " in (
        result.err
    )
    assert SECRET not in result.out + result.err


def test_a_state_password_in_the_config_file_is_refused(run: Run, tmp_path: Path) -> None:
    (tmp_path / "alliance-fhir.toml").write_text(
        f'state_url = "postgresql://alliance@db.example.org/alliance"\n'
        f'state_password = "{SECRET}"\n'
    )

    result = run("status")

    assert result.code == 2
    assert "state_password is a secret and is not read from the config file" in result.err
    assert "ALLIANCE_FHIR_STATE_PASSWORD or state_password_file" in result.err
    assert SECRET not in result.out + result.err


def test_an_unknown_kind_of_state_url_is_a_configuration_error(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_URL", "mysql://db.example.org/alliance")

    result = run("status")

    assert result.code == 2
    assert "state_url: Value error, must start with sqlite:/// or postgresql://" in result.err
