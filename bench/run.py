"""Run every benchmark scenario in one go and write the tables to BENCHMARKS.md.

    python -m bench.run --size 1000 --out BENCHMARKS.md          # starts its own server (8095)
    python -m bench.run --base-url http://127.0.0.1:8089/fhir ... # an already running server

Per clinic size, against one local HAPI server that is expunged and re-seeded with the
clinic's people before each fresh scenario (seeding is not timed): the ceiling, the sync with
its defaults, a re-sync with nothing changed, a re-sync with 1% of the assessments changed,
the ceiling again (the better of the two is the ceiling), then fhirpy and fhirclient. Then the
mapping alone on one core, and the import's peak RSS. Each scenario runs in its own process
(``bench.worker``) so CPU and peak RSS are that client's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.generate import generate
from bench.measure import Measurement
from bench.report import (
    MAX_LOAD_TO_PUBLISH,
    Machine,
    Results,
    default_java_opts,
    machine_info,
    publish,
    too_busy,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]
SERVER_SCRIPT = REPO / "scripts" / "fhir-server"
FHIR_JSON = "application/fhir+json"
EXPUNGE = {
    "resourceType": "Parameters",
    "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
}


#: The heap of a server started for a benchmark. The test server's default (768 MB, bounded
#: for CI) keeps ~580 MB live after a full collection, so the collector ran back to back: 14
#: full collections of ~0.35 s in one conditions run, each in whichever run was measured then
#: (a fifth of a 1.7 s run). The measured runs are of the server, not of its heap being full.
BENCH_HEAP = ("-Xms2g", "-Xmx2g")


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def server_env() -> dict[str, str]:
    """The environment for ``scripts/fhir-server start`` from a benchmark: the default JVM
    options with :data:`BENCH_HEAP` (options set by the caller are kept as given)."""
    env = dict(os.environ)
    if not env.get("ALLIANCE_FHIR_SERVER_JAVA_OPTS"):
        opts = [o for o in default_java_opts().split() if not o.startswith(("-Xms", "-Xmx"))]
        env["ALLIANCE_FHIR_SERVER_JAVA_OPTS"] = " ".join([*BENCH_HEAP, *opts])
    return env


def fhir_server(
    command: str, port: int, *, env: dict[str, str] | None = None, cpus: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``scripts/fhir-server COMMAND --port PORT``, its output captured (never raises);
    ``cpus`` (a ``taskset`` list): the command and what it starts run on those CPUs only."""
    pin = ["taskset", "-c", cpus] if cpus is not None else []
    return subprocess.run(
        [*pin, "bash", str(SERVER_SCRIPT), command, "--port", str(port)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


def start_server(port: int, *, cpus: str | None = None) -> tuple[str, bool]:
    """The base URL of our own server on ``port`` (started with :func:`server_env` when not
    running, on ``cpus`` when given) and whether it was started here."""
    status = fhir_server("status", port)
    if cpus is not None and status.returncode == 0:
        raise SystemExit(
            f"a server already runs on port {port}: the bench must start it itself to run it "
            f"on CPU {cpus} (scripts/fhir-server stop --port {port})"
        )
    start = fhir_server("start", port, env=server_env(), cpus=cpus)
    if start.returncode != 0:
        raise SystemExit(f"cannot start the FHIR server: {start.stderr[-2000:]}")
    return start.stdout.strip().splitlines()[-1], status.returncode != 0


def local_port(base_url: str) -> int | None:
    """The port of a server on this machine (None for another host)."""
    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        return None
    return parts.port or (443 if parts.scheme == "https" else 80)


class Server:
    """The FHIR server under test: reset (expunge), seed over HTTP and, when it is our test
    server on this machine, a full garbage collection before each measured run."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.port = local_port(base_url)
        self.collects = self.port is not None
        self.http = httpx.Client(
            timeout=600, headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
        )

    def collect(self) -> None:
        """A full collection in the server (``scripts/fhir-server gc``), so a measured run
        does not pay for the garbage of the one before; said once when it cannot be done."""
        if not self.collects or self.port is None:
            return
        done = fhir_server("gc", self.port)
        if done.returncode != 0:
            self.collects = False
            log(f"no garbage collection between runs: {done.stderr.strip()[-300:]}")

    def reset(self) -> None:
        resp = self.http.post(f"{self.base_url}/$expunge", json=EXPUNGE)
        if resp.status_code != 200:
            raise SystemExit(f"$expunge failed: HTTP {resp.status_code}: {resp.text[:500]}")

    def seed(self, people: Path) -> None:
        resp = self.http.post(self.base_url, content=people.read_bytes())
        if resp.status_code != 200:
            raise SystemExit(f"seeding failed: HTTP {resp.status_code}: {resp.text[:500]}")

    def fresh(self, people: Path) -> None:
        self.reset()
        self.seed(people)
        self.collect()

    def software(self) -> str:
        resp = self.http.get(f"{self.base_url}/metadata")
        resp.raise_for_status()
        sw = resp.json().get("software") or {}
        return " ".join(str(sw[k]) for k in ("name", "version") if sw.get(k)) or "unknown"


def run_worker(args: list[str], log_file: Path) -> list[Measurement]:
    cmd = [sys.executable, "-m", "bench.worker", *args]
    with log_file.open("a", encoding="utf-8") as err:
        err.write(f"\n### {' '.join(args)}\n")
        err.flush()
        proc = subprocess.run(
            cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=err, text=True, check=False
        )
    if proc.returncode != 0:
        raise SystemExit(f"worker {args[0]} failed (exit {proc.returncode}); see {log_file}")
    out = []
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            out.append(Measurement.from_json(json.loads(line)))
    return out


def clinic(work: Path, size: int, *, changed: float = 0.0, goals: bool = True) -> Path:
    """The generated clinic for ``size`` (reused when already there with the same manifest)."""
    name = f"clinic-{size}" + (f"-changed{changed:g}" if changed else "") + ("" if goals else "-ng")
    path = work / name
    manifest = path / "manifest.json"
    if manifest.is_file():
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if data.get("size") == size and data.get("changed") == changed:
            return path
    generate(size, path, changed=changed, goals=goals)
    return path


def server_scenarios(
    server: Server, work: Path, size: int, *, peers: bool, changed_fraction: float, log_file: Path
) -> list[Measurement]:
    base = server.base_url
    home = clinic(work, size)
    changed = clinic(work, size, changed=changed_fraction)
    people = home / "people.json"
    records = work / f"records-{size}.jsonl"
    log(f"size {size}: exporting the records for the ceiling and the peers")
    run_worker(
        ["export", "--base-url", base, "--clinic", str(home), "--out", str(records)], log_file
    )
    results: list[Measurement] = []

    def scenario(label: str, args: list[str], fresh: bool = True) -> Measurement:
        if fresh:
            server.fresh(people)
        log(f"size {size}: {label} (load average {os.getloadavg()[0]:.2f})")
        (m,) = run_worker(args, log_file)
        m.scenario = label
        m.extra["load_before"] = round(os.getloadavg()[0], 2)
        results.append(m)
        log(f"size {size}: {label}: {m.resources} in {m.wall_s:.1f}s, {m.requests} requests")
        return m

    # warm the server's JIT and caches on a few bundles, then measure
    server.fresh(people)
    run_worker(["ceiling", "--base-url", base, "--records", str(records), "--limit", "4"], log_file)
    ceiling = ["ceiling", "--base-url", base, "--records", str(records)]
    scenario("ceiling (1st)", ceiling)
    state = work / f"state-{size}.sqlite3"
    for stale in work.glob(f"state-{size}.sqlite3*"):
        stale.unlink()
    sync = ["sync", "--base-url", base, "--state", str(state)]
    scenario("alliance-fhir sync", [*sync, "--clinic", str(home)])
    scenario("re-sync, nothing changed", [*sync, "--clinic", str(home)], fresh=False)
    scenario(
        f"re-sync, {100 * changed_fraction:g}% changed",
        [*sync, "--clinic", str(changed)],
        fresh=False,
    )
    scenario("ceiling (2nd)", ceiling)
    if peers:
        scenario("fhirpy", ["fhirpy", "--base-url", base, "--records", str(records)])
        scenario("fhirclient", ["fhirclient", "--base-url", base, "--records", str(records)])
    server.reset()
    return results


def conditions_argv(args: argparse.Namespace) -> list[str]:
    """The options of ``--conditions all`` that ``bench.conditions`` understands."""
    out = ["--port", str(args.port), "--out", str(args.out), "--work", str(args.work)]
    if args.size:
        out += ["--size", str(args.size[0])]
    if args.base_url:
        out += ["--base-url", args.base_url]
    if args.json:
        out += ["--json", str(args.json)]
    return [*out, "--force"] if args.force else out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--size", type=int, action="append", help="assessments (repeatable)")
    parser.add_argument("--peers-max-size", type=int, default=1000, help="peers only up to")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction for the re-sync")
    parser.add_argument("--mapping-size", type=int, default=10000)
    parser.add_argument("--memory-size", type=int, default=100000)
    parser.add_argument("--port", type=int, default=8095, help="own server (started, stopped)")
    parser.add_argument("--base-url", help="use this running server instead (never stopped)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    parser.add_argument("--keep-server", action="store_true")
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"rewrite --out even when the 1-minute load at start is above {MAX_LOAD_TO_PUBLISH}",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="reading and mapping only (one core, no server): ratios that hold under load",
    )
    parser.add_argument(
        "--conditions",
        choices=("all",),
        help="the four server conditions instead (bench.conditions; --size, --port, --base-url,"
        " --out, --json, --work, --force are passed on)",
    )
    args = parser.parse_args(argv)
    if args.conditions:
        from bench import conditions

        conditions.main(conditions_argv(args))
        return
    load_start = os.getloadavg()
    busy = too_busy(load_start[0], args.force, args.out, log)
    sizes = [] if args.offline else (args.size or [1000])
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log_file = work / "workers.log"
    started_here = False
    base_url = args.base_url
    if base_url is None and not sizes:
        base_url = ""
    elif base_url is None:
        base_url, started_here = start_server(args.port)
    server = Server(base_url)
    began = time.time()
    try:
        machine: Machine = machine_info(
            server.software() if sizes else "none (--offline)", server.port
        )
        results = Results(machine=machine, sizes=sizes)
        for size in sizes:
            results.server[size] = server_scenarios(
                server,
                work,
                size,
                peers=size <= args.peers_max_size,
                changed_fraction=args.changed,
                log_file=log_file,
            )
        if args.mapping_size > 0:
            log(f"mapping {args.mapping_size} assessments on one core")
            results.mapping = run_worker(
                ["mapping", "--clinic", str(clinic(work, args.mapping_size, goals=False))],
                log_file,
            )
            results.mapping_size = args.mapping_size
        if args.memory_size > 0:
            log(f"importing {args.memory_size} assessments")
            where = str(clinic(work, args.memory_size, goals=False))
            results.memory = [
                *run_worker(["import", "--clinic", where, "--read-only"], log_file),
                *run_worker(["import", "--clinic", where], log_file),
            ]
            results.memory_size = args.memory_size
    finally:
        if started_here and not args.keep_server:
            fhir_server("stop", args.port)
    results.machine.collected = server.collects
    load_end = os.getloadavg()
    results.load = (load_start[0], load_end[0])
    results.load_triples = (tuple(load_start), tuple(load_end))
    results.minutes = (time.time() - began) / 60
    if args.json is not None:
        args.json.write_text(json.dumps(results.to_json(), indent=2) + "\n", encoding="utf-8")
    aside = work / "BENCHMARKS.loaded.md"
    publish(partial(write_report, results), args.out, aside, busy=busy, load=load_start[0])
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
