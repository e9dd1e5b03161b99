"""Tenants (#17) against HAPI: one ``alliance-fhir daemon`` serving two clinics.

``clinic-a`` syncs to ``/fhir``, ``clinic-b`` to the ``restricted`` mount of the same test
server (which takes no Questionnaire writes: how we tell where a tenant's writes went, since
both mounts share one database), each with its own identifier namespace and canonical base.
Then ``clinic-b`` points at a server that accepts connections and never answers while
``clinic-a`` gets a new file: ``clinic-a``'s cycles go on at their pace and sync it.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

from .clinickit import PHI, copy_clinic, make_api

#: /fhir of the test server (set by the test): where resources are counted.
FULL: list[str] = []


class Tenant:
    def __init__(self, name: str, base_url: str, files: list[Path], goals: list[Path]) -> None:
        tag = uuid.uuid4().hex[:10]
        self.name = name
        self.base_url = base_url
        self.namespace = f"http://tenants-test.example.org/{name}/{tag}/identifier"
        self.canonical = f"http://tenants-test.example.org/{name}/{tag}"
        self.files = files
        self.goals = goals

    def toml(self, base_url: str | None = None, extra: str = "") -> str:
        return (
            f"[tenants.{self.name}]\n"
            f'server_url = "{base_url or self.base_url}"\n'
            f'identifier_namespace = "{self.namespace}"\n'
            f'canonical_base = "{self.canonical}"\n'
            f"assessments = {json.dumps([str(p) for p in self.files])}\n"
            f"goals = {json.dumps([str(p) for p in self.goals])}\n{extra}"
        )

    def settings(self, state: Path) -> Settings:
        return Settings(
            server_url=self.base_url,
            state_path=state,
            identifier_namespace=self.namespace,
            canonical_base=self.canonical,
        )

    def expected(self, tmp: Path) -> dict[tuple[str, str], Counter[str]]:
        """(type, identifier system) -> values expected once, from this tenant's good files."""
        with AllianceFhir(self.settings(tmp / f"expect-{self.name}.sqlite3")) as api:
            records = api.assessment_records([p for p in self.files if "bad" not in p.name])
            records.extend(api.goal_records(self.goals))
        assert not records.problems
        out: dict[tuple[str, str], Counter[str]] = {}
        for desired in records.desired:
            system, _, value = desired.search.removeprefix("identifier=").partition("|")
            out.setdefault((desired.resource_type, system), Counter())[value] += 1
        return out

    def found(self, tmp: Path) -> dict[tuple[str, str], Counter[str]]:
        """What the server holds under each expected identifier system (read through /fhir)."""
        out: dict[tuple[str, str], Counter[str]] = {}
        settings = self.settings(tmp / "read.sqlite3")
        with AllianceFhir(settings.model_copy(update={"server_url": FULL[0]})) as api:
            for rtype, system in self.expected(tmp):
                hits = api.client.search(
                    rtype, {"identifier": f"{system}|"}, headers={"Cache-Control": "no-cache"}
                )
                values: Counter[str] = Counter()
                for resource in hits:
                    idents = resource.get("identifier") or []
                    if isinstance(idents, dict):  # QuestionnaireResponse: one identifier
                        idents = [idents]
                    values.update(i["value"] for i in idents if i.get("system") == system)
                out[(rtype, system)] = values
        return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A FHIR base URL whose server takes connections and never answers (a hung EHR)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/fhir"


def _daemon(tmp: Path, config: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
    env["ALLIANCE_FHIR_CONFIG"] = str(config)
    log = (tmp / f"daemon-{len(list(tmp.glob('daemon-*.log')))}.log").open("w")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alliance_fhir.cli",
            "daemon",
            "--labels-only",
            "--no-monitoring",
            "--settle-seconds",
            "0.3",
            "--backoff-max",
            "2",
            *args,
        ],
        cwd=str(tmp),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _events(tmp: Path, name: str) -> list[dict[str, Any]]:
    lines = (tmp / name).read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _state_keys(path: Path) -> set[str]:
    with AllianceFhir(Settings(state_path=path)) as api:
        return {key for _, key in api.store.all_records()}


def test_two_tenants_sync_apart_and_one_hung_server_never_slows_the_other(
    fhir_base_url: str, fhir_profile_url: Any, tmp_path: Path, silent_server: str
) -> None:
    FULL[:] = [fhir_base_url]
    examples = copy_clinic(tmp_path)
    with make_api(fhir_base_url, tmp_path / "seed.sqlite3") as api:
        api.seed(examples / "clinic" / "people.json")
    assessments = examples / "clinic" / "assessments"
    bad = tmp_path / "bad-export.yaml"
    bad.write_text("assessments:\n  - key: [not, a, key\n", encoding="utf-8")
    a = Tenant(
        "clinic-a",
        fhir_base_url,
        [assessments / "mrn-1001.yaml"],
        [examples / "goals" / "plan-mrn-1001.yaml"],
    )
    b = Tenant("clinic-b", fhir_profile_url("restricted"), [assessments / "mrn-1002.yaml", bad], [])
    top = (
        f'state_path = "{tmp_path}/state/state.sqlite3"\ninbox_dir = "{tmp_path}/inbox"\n'
        "interval_seconds = 1\ninterval_jitter = 0.1\nlog_json = true\n"
        "retry_attempts = 2\nretry_deadline_seconds = 4\ntimeout_seconds = 120\n"
        f"metrics_port = {_free_port()}\n"
    )
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(top + a.toml() + b.toml(), encoding="utf-8")

    # 1. One cycle each: every record on its tenant's server, in its namespace, once; the
    #    bad file is clinic-b's problem only (a configured file's input problems are logged,
    #    ``daemon.input_problems``, and do not fail ``--once``: as for one daemon).
    once = _daemon(tmp_path, config, "--once")
    assert once.wait(timeout=300) == 0, (tmp_path / "daemon-0.log").read_text()
    events = _events(tmp_path, "daemon-0.log")
    done = {e["tenant"]: e for e in events if e.get("event") == "daemon.cycle_done"}
    assert done["clinic-a"]["ok"] is True
    assert done["clinic-b"]["ok"] is True
    problems = [e for e in events if e.get("event") == "daemon.input_problems"]
    assert [e["tenant"] for e in problems] == ["clinic-b"]
    for tenant in (a, b):
        expected = tenant.expected(tmp_path)
        assert tenant.found(tmp_path) == expected, tenant.name
    # where the writes went: only /fhir took Questionnaires (restricted refuses them)
    with AllianceFhir(a.settings(tmp_path / "read.sqlite3")) as api:
        for tenant, count in ((a, 5), (b, 0)):
            found = list(api.client.search("Questionnaire", {"url:below": tenant.canonical}))
            assert len(found) == count, tenant.name
    state = tmp_path / "state"
    keys_a = _state_keys(state / "state.clinic-a.sqlite3")
    keys_b = _state_keys(state / "state.clinic-b.sqlite3")
    assert any("1001" in k for k in keys_a)
    assert not any("1002" in k for k in keys_a)
    assert any("1002" in k for k in keys_b)
    assert not any("1001" in k for k in keys_b)

    # 2. clinic-b's server hangs; clinic-a gets a new file and keeps its pace.
    a.files.append(assessments / "mrn-1003.yaml")
    config.write_text(
        top + a.toml() + b.toml(silent_server, "timeout_seconds = 6\n"), encoding="utf-8"
    )
    daemon = _daemon(tmp_path, config)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            events = _events(tmp_path, "daemon-1.log")
            cycles = [e for e in events if e.get("event") == "daemon.cycle_done"]
            if len([e for e in cycles if e["tenant"] == "clinic-a" and e["ok"]]) >= 5:
                break
            assert daemon.poll() is None, (tmp_path / "daemon-1.log").read_text()
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    events = _events(tmp_path, "daemon-1.log")
    cycles = [e for e in events if e.get("event") == "daemon.cycle_done"]
    a_cycles = [e for e in cycles if e["tenant"] == "clinic-a"]
    b_cycles = [e for e in cycles if e["tenant"] == "clinic-b"]
    assert len(a_cycles) >= 5
    assert all(e["ok"] for e in a_cycles)
    assert all(not e["ok"] for e in b_cycles)
    # clinic-b's cycles each wait out a 6 s timeout; clinic-a's never wait for them
    assert all(e["seconds"] >= 5.5 for e in b_cycles), b_cycles
    # clinic-a's idle cycles after its first come at its own interval (1 s + its cycle),
    # never stretched to clinic-b's 6 s waits
    idle = [e["seconds"] for e in a_cycles[1:]]
    assert max(idle) < 5.5, idle
    ends = [datetime.fromisoformat(e["timestamp"]).timestamp() for e in a_cycles[1:]]
    gaps = [later - earlier for earlier, later in itertools.pairwise(ends)]
    print(
        f"clinic-b hung: {len(b_cycles)} cycles of {[round(e['seconds'], 1) for e in b_cycles]} s; "
        f"clinic-a: {len(a_cycles)} cycles, idle ones {[round(x, 2) for x in idle]} s, "
        f"{[round(g, 2) for g in gaps]} s apart"
    )
    assert max(gaps) < 5.5, gaps
    expected = a.expected(tmp_path)
    assert a.found(tmp_path) == expected
    assert any(e.get("event") == "daemon.stopped" and e["tenant"] == "clinic-b" for e in events)
    assert any(e.get("event") == "daemon.stopped" and e["tenant"] == "clinic-a" for e in events)
    for log in tmp_path.glob("daemon-*.log"):
        text = log.read_text(errors="replace")
        assert not [p for p in PHI if p in text], log.name
