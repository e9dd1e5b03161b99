"""CDS Hooks latency: ``patient-view`` for a client with 50 check-ins (``make bench-cds``).

    python -m bench.cds                                   # starts its own HAPI server (8094)
    python -m bench.cds --base-url http://127.0.0.1:8089/fhir --requests 300

Against a local HAPI server (expunged first): one synthetic client with ``--checkins`` weekly
Session Rating Scale check-ins, falling at the end, is pushed and monitored (so it has score
Observations and open alerts), then the CDS routes are served by uvicorn on loopback, as
``alliance-fhir serve`` does, and called over HTTP with signed JWTs (ES384, signed before the
clock starts: signing is the EHR's cost):

* **with prefetch**: the EHR's templates were run on HAPI once, the bodies carry them (target
  p95 < 100 ms);
* **without prefetch**: the service fetches the four queries from HAPI with the
  ``fhirAuthorization`` token (target p95 < 500 ms).

Prints a table (p50, p95, max per case) with the machine's load average: it is a
measurement, not a test; nothing fails on a slow machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml
from starlette.applications import Starlette

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import CdsIssuer, Settings
from alliance_fhir.web.cds import routes
from bench.cds_ehr import EhrKey, Jwks, call, serve_jwks, sign
from bench.run import fhir_server, start_server

PUBLIC = "https://alliance.clinic.example.org"
SERVICE = f"{PUBLIC}/cds-services/alliance-patient-view"
ISSUER = "https://ehr.example.org"
MRN_SYSTEM = "http://example-clinic.org/mrn"
FHIR_JSON = "application/fhir+json"
NO_CACHE = {"Cache-Control": "no-cache"}
#: What the EHR would hand over as fhirAuthorization (the local HAPI checks no token).
ACCESS_TOKEN = "bench-access-token"  # noqa: S105 - a stand-in, not a secret
EXPUNGE = {
    "resourceType": "Parameters",
    "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
}


def log(message: str) -> None:
    print(f"bench-cds: {message}", file=sys.stderr, flush=True)


def _checkins(path: Path, mrn: str, count: int) -> Path:
    """``count`` weekly SRS check-ins ending a week ago; the last two fall below the cutoff."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(weeks=count)
    records = []
    for n in range(count):
        mark = 9.5 if n < count - 2 else (8.5 if n == count - 2 else 7.6)
        records.append(
            {
                "key": f"bench-cds-{n:03d}",
                "instrument": "srs",
                "authored": (start + timedelta(weeks=n)).isoformat(),
                "answers": {q: str(mark) for q in ("q1", "q2", "q3", "q4")},
            }
        )
    doc = {"defaults": {"patient": {"system": MRN_SYSTEM, "value": mrn}}, "assessments": records}
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def prepare(base_url: str, work: Path, checkins: int) -> str:
    """Expunge, create the client, push and monitor; the client's server id."""
    http = httpx.Client(timeout=600, headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
    resp = http.post(f"{base_url}/$expunge", json=EXPUNGE)
    resp.raise_for_status()
    mrn = "BENCH-CDS-1"
    patient = {"resourceType": "Patient", "identifier": [{"system": MRN_SYSTEM, "value": mrn}]}
    resp = http.post(f"{base_url}/Patient", json=patient)
    resp.raise_for_status()
    patient_id = str(resp.json()["id"])
    settings = Settings(server_url=base_url, state_path=work / "state.sqlite3", timeout_seconds=300)
    with AllianceFhir(settings) as api:
        if not api.publish(labels_only=True).ok:
            raise SystemExit("publishing the instruments failed")
        if not api.push_assessments([_checkins(work / "checkins.yaml", mrn, checkins)]).ok:
            raise SystemExit("pushing the check-ins failed")
        result = api.monitor(all_patients=True)
        if not result.ok:
            raise SystemExit(f"the monitor failed: {result.failures}")
    return patient_id


@contextmanager
def serving(settings: Settings, port: int) -> Iterator[str]:
    """The CDS routes under uvicorn on loopback (``alliance-fhir serve``'s server)."""
    app = Starlette(routes=routes(settings))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise SystemExit(f"uvicorn did not start on port {port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def measure(
    http: httpx.Client, key: EhrKey, bodies: list[dict[str, Any]], *, warmup: int = 5
) -> list[float]:
    """Milliseconds per request (after ``warmup`` unmeasured ones); every answer must be 200
    with at least one card."""
    # signing and encoding are the EHR's work: done before the clock starts
    tokens = [sign(key, aud=SERVICE, iss=ISSUER) for _ in bodies]
    encoded = [json.dumps(body).encode() for body in bodies]
    out: list[float] = []
    for n, (body, token) in enumerate(zip(encoded, tokens, strict=True)):
        started = time.perf_counter()
        resp = http.post(
            "/cds-services/alliance-patient-view",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        elapsed = (time.perf_counter() - started) * 1000
        if resp.status_code != 200 or not resp.json()["cards"]:
            raise SystemExit(f"unexpected answer: HTTP {resp.status_code} {resp.text[:300]}")
        if n >= warmup:
            out.append(elapsed)
    return out


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def row(name: str, values: list[float], target: float) -> str:
    verdict = "met" if p95(values) < target else "missed"
    return (
        f"| {name} | {len(values)} | {statistics.median(values):.1f} | {p95(values):.1f} | "
        f"{max(values):.1f} | < {target:.0f} ({verdict}) |"
    )


def run(base_url: str, *, requests: int, checkins: int, cds_port: int) -> str:
    with tempfile.TemporaryDirectory(prefix="bench-cds-") as tmp:
        work = Path(tmp)
        log(f"preparing a client with {checkins} check-ins on {base_url}")
        patient_id = prepare(base_url, work, checkins)
        key = EhrKey.make("ES384")
        with serve_jwks(Jwks([key])) as jwks:
            settings = Settings(
                server_url=base_url,
                state_path=work / "cds.sqlite3",
                cds_public_url=PUBLIC,
                cds_issuers={ISSUER: CdsIssuer(jwks_url=jwks.url, fhir_servers=[base_url])},
                cds_allow_loopback_http=True,
            )
            with serving(settings, cds_port) as url, httpx.Client(base_url=url) as http:
                templates = http.get("/cds-services").json()["services"][0]["prefetch"]
                with httpx.Client(base_url=base_url, headers=NO_CACHE) as fhir:
                    prefetch = {
                        k: fhir.get("/" + t.replace("{{context.patientId}}", patient_id)).json()
                        for k, t in templates.items()
                    }
                scores = len(prefetch["scores"].get("entry") or [])
                log(f"prefetch holds {scores} score Observations; measuring")
                with_prefetch = [
                    {**call(patient_id, prefetch=prefetch), "hookInstance": str(uuid.uuid4())}
                    for _ in range(requests + 5)
                ]
                fetching = [
                    call(patient_id, fhir_server=base_url, token=ACCESS_TOKEN)
                    for _ in range(max(20, requests // 2) + 5)
                ]
                a = measure(http, key, with_prefetch)
                b = measure(http, key, fetching)
    load = os.getloadavg()
    return "\n".join(
        [
            f"CDS Hooks patient-view, one client with {checkins} check-ins "
            f"({scores} score Observations), {os.cpu_count()} cores, load average "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)",
            "",
            "| case | requests | p50 ms | p95 ms | max ms | target p95 ms |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
            row("with prefetch", a, 100),
            row("without prefetch (fetch from HAPI)", b, 500),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cds", description=__doc__)
    parser.add_argument("--base-url", help="an already running FHIR server (expunged!)")
    parser.add_argument("--port", type=int, default=8094, help="port of the HAPI server started")
    parser.add_argument("--cds-port", type=int, default=18441, help="port the service listens on")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--checkins", type=int, default=50)
    args = parser.parse_args(argv)
    alog.configure(level="WARNING")  # a line per request would be timed too
    base_url: str = args.base_url or ""
    started_here = False
    if not base_url:
        log(f"starting the HAPI server on port {args.port}")
        # the bench heap, as bench.run and bench.conditions start it; a server already
        # running on the port is used as it is, and left running
        base_url, started_here = start_server(args.port)
    try:
        print(
            run(
                base_url.rstrip("/"),
                requests=args.requests,
                checkins=args.checkins,
                cds_port=args.cds_port,
            )
        )
    finally:
        if started_here:
            fhir_server("stop", args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
