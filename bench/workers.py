"""1 vs N ``alliance-fhir daemon`` workers on one PostgreSQL state store (issue #17, item 6).

By hand (``make bench-workers``), not in CI. For each worker count it expunges the server,
seeds the generated clinic's people, starts the workers on a fresh PostgreSQL schema with
``toxiproxy`` adding ``--latency-ms`` to every response from the FHIR server (as
``faults/toxiproxy.py`` does for the fault scenarios), and times from the first start to
every work item done (publish + every source file). It prints one JSON line per run and a
Markdown row with the speed-up and the load average it ran under.

    python -m bench.workers --base-url http://127.0.0.1:8080/fhir --pg-port 18519
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import psycopg
from faults.toxiproxy import Toxiproxy, find_or_install

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import load_settings
from bench import generate as clinic_generator

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).with_name("alliance-fhir")
EXPUNGE = {
    "resourceType": "Parameters",
    "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
}


def _postgres(port: int) -> tuple[str, str]:
    done = subprocess.run(
        [str(REPO / "scripts" / "postgres"), "start", "--port", str(port)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    password = Path(lines[1].split(":", 1)[1].strip()).read_text(encoding="ascii").strip()
    return lines[0].strip(), password


def _done(url: str, password: str) -> int:
    with psycopg.connect(url, password=password, autocommit=True) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM work_items WHERE done_fingerprint = fingerprint"
        ).fetchone()
    return int(row[0]) if row else 0


def run_once(
    workers: int,
    *,
    base_url: str,
    proxied_url: str,
    clinic: Path,
    files: int,
    pg_url: str,
    password: str,
    tmp: Path,
) -> float:
    """Seconds from starting ``workers`` daemons to every item done (fresh server, schema)."""
    httpx.post(
        f"{base_url}/$expunge",
        json=EXPUNGE,
        headers={"Content-Type": "application/fhir+json"},
        timeout=600,
    ).raise_for_status()
    settings = load_settings(server_url=base_url, state_path=tmp / f"seed-{workers}.sqlite3")
    with AllianceFhir(settings) as api:
        api.seed(clinic / "people.json")
    schema = f"bench_w{workers}_{os.getpid()}"
    with psycopg.connect(pg_url, password=password, autocommit=True) as db:
        db.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
        db.execute(f"CREATE SCHEMA {schema}".encode())
    state_url = f"{pg_url}?options={quote(f'-csearch_path={schema}')}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
    env.update(
        {
            "ALLIANCE_FHIR_SERVER_URL": proxied_url,
            "ALLIANCE_FHIR_STATE_URL": state_url,
            "ALLIANCE_FHIR_STATE_PASSWORD": password,
            "ALLIANCE_FHIR_ASSESSMENTS": json.dumps([str(clinic / "assessments")]),
            "ALLIANCE_FHIR_INTERVAL_SECONDS": "1",
            "ALLIANCE_FHIR_LEASE_SECONDS": "10",
            "ALLIANCE_FHIR_LOG_LEVEL": "WARNING",
        }
    )
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [str(CLI), "daemon", "--labels-only", "--no-metrics", "--no-monitoring"],
            env=dict(env, ALLIANCE_FHIR_INBOX_DIR=str(tmp / f"inbox-{workers}-{n}")),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(tmp / f"w{workers}-{n}.log").open("w"),
        )
        for n in range(workers)
    ]
    try:
        while True:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a worker exited; logs in {tmp}")
            try:
                if _done(state_url, password) >= files + 1:  # + the publish item
                    break
            except psycopg.errors.UndefinedTable:
                pass  # not migrated yet
            time.sleep(0.2)
        return time.monotonic() - started
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True, help="the FHIR server (expunged!)")
    parser.add_argument("--pg-port", type=int, default=18519, help="scripts/postgres port")
    parser.add_argument("--size", type=int, default=2000, help="assessments (about)")
    parser.add_argument("--workers", default="1,3", help="worker counts to compare")
    parser.add_argument("--latency-ms", type=int, default=25)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    clinic_generator.CLIENTS_PER_CSV = 5  # many small files, as the integration test
    manifest = clinic_generator.generate(args.size, tmp / "clinic", goals=False)
    files = sum(1 for p in (tmp / "clinic" / "assessments").rglob("*.*") if p.is_file())
    pg_url, password = _postgres(args.pg_port)
    upstream = urlsplit(args.base_url)
    results: dict[int, float] = {}
    with Toxiproxy(find_or_install(), tmp / "toxiproxy.log") as toxi:
        proxy = toxi.proxy("fhir", f"{upstream.hostname}:{upstream.port}")
        proxy.add_toxic("lag", "latency", latency=args.latency_ms)
        proxied = proxy.url(upstream.path)
        for n in (int(x) for x in args.workers.split(",")):
            load = os.getloadavg()[0]
            seconds = run_once(
                n,
                base_url=args.base_url,
                proxied_url=proxied,
                clinic=tmp / "clinic",
                files=files,
                pg_url=pg_url,
                password=password,
                tmp=tmp,
            )
            results[n] = seconds
            print(
                json.dumps(
                    {
                        "workers": n,
                        "assessments": manifest.assessments,
                        "files": files,
                        "latency_ms": args.latency_ms,
                        "seconds": round(seconds, 2),
                        "load_before": round(load, 2),
                        "load_after": round(os.getloadavg()[0], 2),
                    }
                ),
                flush=True,
            )
    base = results[min(results)]
    for n, seconds in sorted(results.items()):
        print(
            f"| {n} worker(s) | {manifest.assessments} assessments, {files} files, "
            f"+{args.latency_ms} ms | {seconds:.1f} s | {base / seconds:.2f}x |"
        )


if __name__ == "__main__":
    main()
