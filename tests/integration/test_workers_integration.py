"""Issue #17's proof: three ``alliance-fhir daemon`` processes share one generated clinic
through a PostgreSQL state store; one is SIGKILLed while it holds a lease and another is
started in its place. Every record lands on the server exactly once (counted by our
identifiers), none is lost, every work item ends done, and the state store agrees with the
server. The survivors drain on SIGTERM and exit 0 with no lease left behind.

Real HAPI, real PostgreSQL (``scripts/postgres``), real processes. Sized to fit ``make test``
(300 assessments in 18 files by default); the 1-vs-3-worker timing is ``make bench-workers``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from alliance_fhir.adapters.identity import identifier_system
from alliance_fhir.sync.state import open_store
from pgkit import Cluster

from .clinickit import make_api

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` lives beside `src`, outside the package
    sys.path.insert(0, str(REPO))

from bench import generate as clinic_generator  # noqa: E402

NAMESPACE = "http://workers.test/fhir/identifier"
CANONICAL = "http://workers.test/fhir"
#: 300 assessments: 15 clients x 10 sessions x (TRC + SRS), no goal plans; one TRC file per
#: client and one SRS CSV per 5 clients: 18 files (sized for `make test`'s budget). A bigger
#: clinic: ``ALLIANCE_FHIR_TEST_WORKERS_SIZE=1000`` (a multiple of 100; 60 files).
SIZE = int(os.environ.get("ALLIANCE_FHIR_TEST_WORKERS_SIZE", "300"))
SESSIONS = 10
FILES = SIZE // 20 + SIZE // 100
LEASE_SECONDS = 4
CLI = Path(sys.executable).with_name("alliance-fhir")
WRITTEN = ("Questionnaire", "CodeSystem", "QuestionnaireResponse", "Observation")


@dataclass
class Store:
    url: str
    password: str | None

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, password=self.password, autocommit=True) as db:
            return db.execute(sql.encode(), args).fetchall()

    def counts(self) -> tuple[int, int, int]:
        """pending, leased, done (as ``status`` counts them)."""
        (row,) = self.rows(
            "SELECT"
            " COUNT(*) FILTER (WHERE (done_fingerprint IS DISTINCT FROM fingerprint)"
            "   AND (lease_owner IS NULL OR lease_until < EXTRACT(EPOCH FROM now()))),"
            " COUNT(*) FILTER (WHERE (done_fingerprint IS DISTINCT FROM fingerprint)"
            "   AND lease_owner IS NOT NULL AND lease_until >= EXTRACT(EPOCH FROM now())),"
            " COUNT(*) FILTER (WHERE done_fingerprint = fingerprint) FROM work_items"
        )
        return int(row[0]), int(row[1]), int(row[2])

    def held_by(self, pid: int) -> int:
        (row,) = self.rows(
            "SELECT COUNT(*) FROM work_items WHERE lease_owner LIKE %s"
            " AND lease_until >= EXTRACT(EPOCH FROM now())",
            (f"%:{pid}:%",),
        )
        return int(row[0])


class Worker:
    """``alliance-fhir daemon`` as a real process; logs to a file (not PHI-scanned here:
    the daemon's own log tests do that)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [str(CLI), "daemon", "--labels-only", "--no-metrics", "--no-monitoring"],
            env=env,
            cwd=str(log.parent),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker ignored SIGTERM for {timeout}s:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._out.close()


def _wait(what: str, check: Callable[[], bool], timeout: float, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            if w.proc.poll() is not None:
                pytest.fail(f"a worker exited ({w.proc.returncode}):\n{w.text()[-3000:]}")
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _on_server(http: httpx.Client, rtype: str) -> tuple[Counter[str], set[str]]:
    """How many resources of ``rtype`` carry each identity (our identifier, or a canonical's
    url|version), and the resources' ids."""
    found: Counter[str] = Counter()
    ids: set[str] = set()
    url: str | None = f"{rtype}?_elements=identifier,url,version&_count=1000"
    while url:
        page = http.get(url)
        page.raise_for_status()
        bundle = page.json()
        for entry in bundle.get("entry") or []:
            resource = entry["resource"]
            ids.add(resource["id"])
            if "url" in resource:
                found[f"{resource['url']}|{resource.get('version', '')}"] += 1
            idents = resource.get("identifier") or []  # 0..1 on QuestionnaireResponse
            for ident in [idents] if isinstance(idents, dict) else idents:
                if str(ident.get("system", "")).startswith(NAMESPACE):
                    found[f"{ident['system']}|{ident['value']}"] += 1
        url = next((ln["url"] for ln in bundle.get("link", []) if ln["relation"] == "next"), None)
    return found, ids


@pytest.fixture
def store(postgres: Cluster) -> Iterator[Store]:
    schema = postgres.new_schema()
    url = postgres.schema_url(schema)
    open_store(url, password=postgres.password).close()  # migrated before anyone polls it
    yield Store(url, postgres.password)
    postgres.drop_schema(schema)


def test_three_workers_one_killed_every_record_exactly_once(
    fhir_base_url: str,
    fhir_reset: Callable[[], None],
    fhir_http: httpx.Client,
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Many small files: 5 clients per SRS CSV beside one TRC file per client.
    monkeypatch.setattr(clinic_generator, "CLIENTS_PER_CSV", 5)
    clinic = tmp_path / "clinic"
    manifest = clinic_generator.generate(SIZE, clinic, sessions=SESSIONS, goals=False)
    files = list((clinic / "assessments").rglob("*.*"))
    assert len(files) == FILES
    with make_api(fhir_base_url, tmp_path / "seed.sqlite3") as api:
        api.seed(clinic / "people.json")

    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
    env.update(
        {
            "ALLIANCE_FHIR_SERVER_URL": fhir_base_url,
            "ALLIANCE_FHIR_STATE_URL": store.url,
            "ALLIANCE_FHIR_ASSESSMENTS": f'["{clinic / "assessments"}"]',
            "ALLIANCE_FHIR_IDENTIFIER_NAMESPACE": NAMESPACE,
            "ALLIANCE_FHIR_CANONICAL_BASE": CANONICAL,
            "ALLIANCE_FHIR_INTERVAL_SECONDS": "1",
            "ALLIANCE_FHIR_LEASE_SECONDS": str(LEASE_SECONDS),
            "ALLIANCE_FHIR_DRAIN_SECONDS": "60",
            "ALLIANCE_FHIR_LOG_JSON": "true",
            # a loaded machine answers slowly: a timeout is no test of the leases
            "ALLIANCE_FHIR_TIMEOUT_SECONDS": "120",
        }
    )
    if store.password is not None:
        env["ALLIANCE_FHIR_STATE_PASSWORD"] = store.password
    started = time.monotonic()
    workers: list[Worker] = []
    for n in range(3):
        wenv = dict(env, ALLIANCE_FHIR_INBOX_DIR=str(tmp_path / f"inbox-{n}"))
        workers.append(Worker(wenv, tmp_path / f"worker-{n}.log"))
    try:
        victim = workers[0]
        # mid-run: a quarter of the files done, and the victim holding a lease
        _wait(
            "a quarter of the files done",
            lambda: store.counts()[2] >= FILES // 4,
            timeout=600,
            workers=workers,
        )
        _wait(
            "the victim to hold a lease",
            lambda: store.held_by(victim.pid) > 0,
            timeout=60,
            workers=workers,
        )
        victim.kill()
        killed_at = time.monotonic()
        workers.remove(victim)
        replacement = dict(env, ALLIANCE_FHIR_INBOX_DIR=str(tmp_path / "inbox-3"))
        workers.append(Worker(replacement, tmp_path / "worker-3.log"))
        _wait(
            "every work item done",
            lambda: store.counts() == (0, 0, FILES + 1),  # the files + the publish item
            timeout=900,
            workers=workers,
        )
        finished = time.monotonic()
        # the item the victim held ran out and was claimed again, by another worker
        (retaken,) = store.rows("SELECT MAX(attempts) FROM work_items")
        assert retaken[0] >= 2
        codes = [w.terminate() for w in workers]
        assert codes == [0, 0, 0], [w.text()[-2000:] for w in workers]
    finally:
        for w in [victim, *workers]:
            w.kill()
    print(  # figures for the report (pytest -s)
        f"\n3 workers: {manifest.assessments} assessments in {len(files)} files, "
        f"{finished - started:.1f}s, victim killed at {killed_at - started:.1f}s"
    )

    # drained: no lease left, no live worker but the dead one's expired row
    assert store.rows("SELECT COUNT(*) FROM work_items WHERE lease_owner IS NOT NULL") == [(0,)]
    assert store.rows(
        "SELECT COUNT(*) FROM workers WHERE expires >= EXTRACT(EPOCH FROM now())"
    ) == [(0,)]

    # exactly once on the server, none lost, and the state store agrees with it
    state = store.rows(
        "SELECT kind, key, resource_type, server_id, status FROM resources ORDER BY kind, key"
    )
    assert {r[4] for r in state} == {"synced"}
    assert store.rows("SELECT COUNT(*) FROM dead_letters") == [(0,)]
    identities: dict[str, Counter[str]] = {}
    for rtype in WRITTEN:
        on_server, ids = _on_server(fhir_http, rtype)
        identities[rtype] = on_server
        duplicates = {k: n for k, n in on_server.items() if n > 1}
        assert duplicates == {}, f"{rtype} written more than once: {len(duplicates)}"
        # the server was empty: every resource of the type is one the state store knows
        assert ids == {r[3] for r in state if r[2] == rtype}, rtype
    for kind, key, rtype, _id, _status in state:  # each record by its identifier, once
        if rtype in ("QuestionnaireResponse", "Observation"):
            assert identities[rtype][f"{identifier_system(kind, NAMESPACE)}|{key}"] == 1, rtype
    responses = sum(1 for r in state if r[2] == "QuestionnaireResponse")
    assert responses == manifest.assessments == SIZE
