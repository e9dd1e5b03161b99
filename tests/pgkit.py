"""Helpers for tests on a PostgreSQL state store (plain functions; fixtures live in
``tests/conftest.py``): a throwaway cluster through ``scripts/postgres``, one schema per test.

Where the cluster comes from, first match wins:

* ``ALLIANCE_FHIR_TEST_STATE_URL`` (+ ``ALLIANCE_FHIR_TEST_STATE_PASSWORD``): an existing
  database; tests make and drop schemas in it, nothing else.
* ``ALLIANCE_FHIR_TEST_PG_PORT``: ``scripts/postgres start --port N`` (kept for the next
  session, stopped at the end).
* otherwise a free port, the cluster destroyed at session end (several checkouts on one
  machine never collide).
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "postgres"


@dataclass(frozen=True)
class Cluster:
    url: str
    password: str | None
    #: The port scripts/postgres runs it on (None: an external database).
    port: int | None = None
    #: Destroy (not just stop) at session end.
    throwaway: bool = False

    def schema_url(self, schema: str) -> str:
        """The URL of ``schema`` in the cluster's database (libpq ``options``)."""
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options={quote(f'-csearch_path={schema}')}"

    def connect(self, schema: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
        url = self.schema_url(schema) if schema else self.url
        return psycopg.connect(url, password=self.password, autocommit=True)

    def new_schema(self) -> str:
        name = "t_" + secrets.token_hex(6)
        with self.connect() as db:
            db.execute(f"CREATE SCHEMA {name}")
        return name

    def drop_schema(self, name: str) -> None:
        with self.connect() as db:
            db.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cluster() -> Cluster:
    """The session's cluster (see the module docstring); fails loudly, never skips."""
    external = os.environ.get("ALLIANCE_FHIR_TEST_STATE_URL")
    if external:
        return Cluster(external, os.environ.get("ALLIANCE_FHIR_TEST_STATE_PASSWORD"))
    fixed = os.environ.get("ALLIANCE_FHIR_TEST_PG_PORT")
    port = int(fixed) if fixed else free_port()
    done = script("start", "--port", str(port))
    if done.returncode != 0:
        raise RuntimeError(f"scripts/postgres start --port {port} failed:\n{done.stderr}")
    lines = done.stdout.splitlines()
    url = lines[0].strip()
    password_file = Path(lines[1].split(":", 1)[1].strip())
    password = password_file.read_text(encoding="ascii").strip()
    return Cluster(url, password, port=port, throwaway=not fixed)


def stop_cluster(cluster: Cluster) -> None:
    if cluster.port is not None:
        script("destroy" if cluster.throwaway else "stop", "--port", str(cluster.port))
