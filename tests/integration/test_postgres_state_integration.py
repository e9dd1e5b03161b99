"""The done-when of the PostgreSQL state store: ``alliance-fhir demo`` (the example clinic)
and a second run behave on PostgreSQL as on SQLite, the second writing nothing; ``status``
and ``doctor`` work on it. Real HAPI, real PostgreSQL (``scripts/postgres``).

``make test`` runs the PostgreSQL side; the side-by-side comparison of every line printed
(four syncs of the clinic, a few minutes) is ``make state-compare``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from alliance_fhir.cli import main
from pgkit import Cluster

from .clinickit import copy_clinic

#: Every type the demo writes (seeded people included).
WRITTEN = (
    "Patient",
    "Practitioner",
    "CodeSystem",
    "Questionnaire",
    "QuestionnaireResponse",
    "Observation",
    "Goal",
    "CarePlan",
    "Flag",
    "Task",
)


@pytest.fixture
def schema(postgres: Cluster) -> Iterator[str]:
    name = postgres.new_schema()
    yield name
    postgres.drop_schema(name)


def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Exit code, stdout (what a user reads; compared across backends) and stderr (logs,
    which carry timing-dependent retries)."""
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _steady(text: str) -> str:
    """Output without what differs between any two runs: run ids, times, durations."""
    text = re.sub(r"\b[0-9a-f]{12}\b", "<run>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<when>", text)
    return re.sub(r"\b\d+(\.\d+)?s\b", "<t>s", text)


def _written_since(http: httpx.Client, since: str) -> dict[str, int]:
    """Resources of each type created or updated after ``since`` (the server's own count)."""
    found = {}
    for rtype in WRITTEN:
        answer = http.get(rtype, params={"_lastUpdated": f"gt{since}", "_summary": "count"})
        answer.raise_for_status()
        found[rtype] = int(answer.json()["total"])
    return {t: n for t, n in found.items() if n}


def _demo_twice(
    base_url: str, http: httpx.Client, examples: Path, env: dict[str, str]
) -> tuple[str, str, dict[str, int]]:
    """Stdout of a first and a second ``demo``, and what the second wrote on the server."""
    demo = ("--server-url", base_url, "demo", "--examples", str(examples))
    code, first, err = _cli(env, *demo)
    assert code == 0, first + err
    time.sleep(1.1)  # _lastUpdated has second precision on the server
    since = datetime.now(UTC).isoformat(timespec="seconds")
    time.sleep(1.1)
    code, second, err = _cli(env, *demo)
    assert code == 0, second + err
    return first, second, _written_since(http, since)


@pytest.fixture
def on_postgres(postgres: Cluster, schema: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI run on a fresh PostgreSQL store (password in a 0600 file)."""
    assert postgres.password is not None
    password_file = tmp_path / "pg-password"
    password_file.write_text(postgres.password)
    password_file.chmod(0o600)
    return {
        "ALLIANCE_FHIR_STATE_URL": postgres.schema_url(schema),
        "ALLIANCE_FHIR_STATE_PASSWORD_FILE": str(password_file),
    }


def test_the_demo_on_postgresql_then_a_second_run_writes_nothing(
    fhir_base_url: str,
    fhir_http: httpx.Client,
    fhir_reset: Callable[[], None],
    postgres: Cluster,
    on_postgres: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    examples = copy_clinic(tmp_path)
    monkeypatch.chdir(tmp_path)

    first, second, written = _demo_twice(fhir_base_url, fhir_http, examples, on_postgres)

    assert re.search(r"demo done: [1-9]\d* created, 0 updated, ", first), first
    assert "demo done: 0 created, 0 updated, " in second, second
    assert ", 0 conflicts, 0 rejected; 0 input problems" in second
    assert written == {}
    code, status, err = _cli(on_postgres, "status")
    assert code == 0, status + err
    assert "push goals" in status  # the runs table
    assert "records: synced " in status
    code, doctor, err = _cli(on_postgres, "--server-url", fhir_base_url, "doctor")
    assert code == 0, doctor + err
    assert not Path(".alliance-fhir/state.sqlite3").exists()  # nothing fell back to SQLite
    assert str(postgres.password) not in first + second + status + doctor + err


@pytest.mark.skipif(
    os.environ.get("ALLIANCE_FHIR_STATE_COMPARE", "") in ("", "0"),
    reason="the SQLite comparison syncs the clinic four times: `make state-compare`",
)
def test_the_demo_and_a_second_run_on_postgresql_print_what_they_print_on_sqlite(
    fhir_base_url: str,
    fhir_http: httpx.Client,
    fhir_reset: Callable[[], None],
    on_postgres: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    examples = copy_clinic(tmp_path)
    monkeypatch.chdir(tmp_path)
    pg_first, pg_second, pg_written = _demo_twice(fhir_base_url, fhir_http, examples, on_postgres)
    pg_status = _cli(on_postgres, "status")[1]

    fhir_reset()
    on_sqlite = {"ALLIANCE_FHIR_STATE_PATH": str(tmp_path / "sqlite" / "state.sqlite3")}
    sq_first, sq_second, sq_written = _demo_twice(fhir_base_url, fhir_http, examples, on_sqlite)
    sq_status = _cli(on_sqlite, "status")[1]

    assert pg_written == sq_written == {}
    assert _steady(pg_first) == _steady(sq_first)
    assert _steady(pg_second) == _steady(sq_second)
    assert _steady(pg_status) == _steady(sq_status)  # runs, outcomes, counts, records
