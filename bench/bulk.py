"""Bulk Data ``$export`` pull vs paged search of N QuestionnaireResponses (issue #17).

By hand (``make bench-bulk``): loading 100,000 responses into HAPI takes a while, so the
data goes into a file database (``--file-db``) that a later run reuses; the loader writes
with PUT (fixed ids) in transaction bundles, so a run that stopped half way is resumed,
not duplicated.

    python -m bench.bulk --port 8092 --size 100000 --db .bench/bulk-db

Each pull runs in its own process (``measure`` below) so its peak RSS is its own: the
monitor's pull (``app.response_pull.pull_responses``) forced one way or the other, every
response read into the list the monitor evaluates. Prints one line per pull and a JSON
summary; nothing is extrapolated: the figures are for the size loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.measure import Measurement, peak_rss_mb, timed

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = ROOT / "scripts" / "fhir-server"
SRS = "http://alliance-fhir.org/fhir/Questionnaire/srs"
PATIENTS = 1000
BUNDLE = 500
FHIR_JSON = "application/fhir+json"


def log(message: str) -> None:
    print(f"[bench-bulk {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _response(n: int) -> dict[str, Any]:
    """Response ``n``: SRS answers that vary with ``n``, a synthetic patient, no PHI."""
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n)
    return {
        "resourceType": "QuestionnaireResponse",
        "id": f"bench-qr-{n:06d}",
        "questionnaire": f"{SRS}|1.0.0",
        "status": "completed",
        "subject": {"reference": f"Patient/bench-p-{n % PATIENTS:04d}"},
        "authored": when.isoformat(),
        "item": [
            {"linkId": q, "answer": [{"valueDecimal": 5 + (n * (i + 3)) % 50 / 10}]}
            for i, q in enumerate(("q1", "q2", "q3", "q4"))
        ],
    }


def _put_bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def _count(http: httpx.Client) -> int:
    resp = http.get(
        "/QuestionnaireResponse",
        params={"questionnaire": SRS, "_summary": "count"},
        headers={"Cache-Control": "no-cache"},
    )
    resp.raise_for_status()
    return int(resp.json().get("total") or 0)


def load(base_url: str, size: int, *, workers: int = 2, deadline: float | None = None) -> int:
    """Load responses 0..size-1 (and their patients) unless already there; the count the
    server holds at the end (less than ``size`` when ``deadline`` stopped the load)."""
    with httpx.Client(base_url=base_url, timeout=600, headers={"Accept": FHIR_JSON}) as http:
        have = _count(http)
        if have >= size:
            log(f"{have} responses already loaded")
            return have
        patients = [
            {"resourceType": "Patient", "id": f"bench-p-{p:04d}", "active": True}
            for p in range(PATIENTS)
        ]
        post = {"Content-Type": FHIR_JSON}
        http.post("", json=_put_bundle(patients), headers=post).raise_for_status()
        start = (have // BUNDLE) * BUNDLE  # PUTs make a partly loaded bundle harmless
        chunks = [range(i, min(i + BUNDLE, size)) for i in range(start, size, BUNDLE)]
        t0 = time.perf_counter()

        def send(chunk: range) -> int:
            if deadline is not None and time.time() > deadline:
                return 0
            bundle = _put_bundle([_response(n) for n in chunk])
            http.post("", json=bundle, headers=post).raise_for_status()
            return len(chunk)

        done = 0
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for sent in pool.map(send, chunks):
                done += sent
                if sent and (done // BUNDLE) % 20 == 0:
                    rate = done / (time.perf_counter() - t0)
                    log(f"loaded {start + done}/{size} ({rate:.0f}/s)")
        return _count(http)


def measure(base_url: str, mode: str) -> Measurement:
    """One pull in this process, as the monitor pulls (every response kept in a list)."""
    from alliance_fhir.app.response_pull import pull_responses
    from alliance_fhir.config import Settings
    from alliance_fhir.fhir import Capabilities, FhirClient
    from alliance_fhir.instruments.library import load_library
    from alliance_fhir.monitoring.pull import questionnaire_urls

    settings = Settings(
        server_url=base_url,
        bulk_threshold=0 if mode == "bulk" else 10**9,
        bulk_poll_max_seconds=2.0,
    )
    urls = questionnaire_urls(load_library([]).all(), settings.canonical_base)
    m = Measurement(scenario=f"pull-{mode}")
    with FhirClient(base_url, timeout=600, max_pages=100_000) as client:
        caps = Capabilities.from_statement(client.capabilities())
        with timed(m):
            pulled = pull_responses(client, urls, None, settings, caps)
        m.resources = len(pulled.resources)
        m.peak_rss_mb = peak_rss_mb()
        m.extra = {"via": pulled.via, "problems": len(pulled.problems)}
    return m


def _server(*args: str) -> None:
    subprocess.run(["bash", str(SERVER_SCRIPT), *args], check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("measure", help="(internal) one pull in this process")
    one.add_argument("--base-url", required=True)
    one.add_argument("--mode", choices=("bulk", "paged"), required=True)
    parser.add_argument("--port", type=int, default=8092, help="own server (started, stopped)")
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--db", type=Path, default=ROOT / ".bench" / "bulk-db")
    parser.add_argument("--load-minutes", type=float, default=None, help="stop loading after")
    parser.add_argument("--keep-server", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(json.dumps(measure(args.base_url, args.mode).to_json()))
        return

    base = f"http://127.0.0.1:{args.port}/fhir"
    args.db.mkdir(parents=True, exist_ok=True)
    _server("start", "--port", str(args.port), "--file-db", str(args.db), "--no-validation")
    try:
        deadline = time.time() + args.load_minutes * 60 if args.load_minutes else None
        t0 = time.perf_counter()
        loaded = load(base, args.size, deadline=deadline)
        log(f"{loaded} responses on the server ({time.perf_counter() - t0:.0f} s to load)")
        results = []
        for mode in ("bulk", "paged"):
            out = subprocess.run(
                [sys.executable, "-m", "bench.bulk", "measure", "--base-url", base, "--mode", mode],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
                env={**os.environ, "ALLIANCE_FHIR_LOG_LEVEL": "WARNING"},
            )
            m = Measurement.from_json(json.loads(out.stdout.strip().splitlines()[-1]))
            results.append(m)
            log(
                f"{m.scenario}: {m.resources} responses in {m.wall_s:.1f} s "
                f"({m.per_second:.0f}/s), CPU {m.cpu_s:.1f} s, peak RSS {m.peak_rss_mb:.0f} MB"
            )
        load_avg = os.getloadavg()[0]
        print(
            json.dumps(
                {
                    "loaded": loaded,
                    "load_avg_1m": round(load_avg, 1),
                    "results": [m.to_json() for m in results],
                },
                indent=2,
            )
        )
    finally:
        if not args.keep_server:
            _server("stop", "--port", str(args.port))


if __name__ == "__main__":
    main()
