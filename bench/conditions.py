"""The four server conditions of issue 15: request validation on / off x 0 / 25 ms added RTT.

    python -m bench.conditions --size 300 --out BENCHMARKS.md    # = bench.run --conditions all

One HAPI server (started here on ``--port`` unless ``--base-url`` names a running one): its
``/fhir`` validates every request, its ``/profiles/no-validation/fhir`` is the same server
and database without request validation (the common production set-up). The 25 ms
conditions go through a toxiproxy proxy with a latency toxic each way (12 ms up, 13 ms
down; toxiproxy takes whole milliseconds); the 0 ms ones go straight to the server.

Per condition, each scenario in its own ``bench.worker`` process on a freshly expunged and
seeded server: ceiling and alliance-fhir sync alternately, ``--repeat`` times each (the best
of each counts, so both get the same chance under noise), then fhirpy and fhirclient once.
The Markdown goes between the ``bench:conditions`` markers of ``--out`` (placed after the
results block when absent); at a 1-minute load above 1.5 at start it goes to
``<work>/BENCHMARKS.conditions.loaded.md`` instead unless ``--force``.

``--split-cores`` is a diagnostic, not the issue's measurement: the server (started here) runs
on the last CPU only and everything else (this process, the workers, toxiproxy) on the others,
as if the server were another machine. It tells the cost of the client's CPU, which on a
shared machine slows the server the client waits for, apart from how the client waits. Its
table goes between the ``bench:conditions-split`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from faults.toxiproxy import Toxiproxy, find_or_install

from bench.measure import Measurement
from bench.report import END as RESULTS_END
from bench.report import (
    MAX_LOAD_TO_PUBLISH,
    TARGET_CEILING_RATIO,
    Machine,
    collected_note,
    machine_info,
    publish,
    too_busy,
    verdict_ratio,
)
from bench.run import Server, clinic, fhir_server, log, run_worker, start_server

START = "<!-- bench:conditions:start -->"
END = "<!-- bench:conditions:end -->"
SPLIT_START = "<!-- bench:conditions-split:start -->"
SPLIT_END = "<!-- bench:conditions-split:end -->"
REPO = Path(__file__).resolve().parents[1]
NO_VALIDATION_PATH = "/profiles/no-validation/fhir"
#: Added round trip, split over the two directions (toxiproxy's latency is whole ms).
RTT_MS = 25
UP_MS = RTT_MS // 2
DOWN_MS = RTT_MS - UP_MS


@dataclass(frozen=True)
class Condition:
    validation: bool
    rtt_ms: int

    @property
    def label(self) -> str:
        server = "request validation on" if self.validation else "no request validation"
        return f"{server}, +{self.rtt_ms} ms RTT"


CONDITIONS = (
    Condition(True, 0),
    Condition(True, RTT_MS),
    Condition(False, 0),
    Condition(False, RTT_MS),
)


@dataclass
class Outcome:
    """Every measurement of one condition (scenario names: ceiling, sync, fhirpy, fhirclient)."""

    condition: Condition
    rows: list[Measurement] = field(default_factory=list)

    def runs(self, scenario: str) -> list[Measurement]:
        """The measurements of ``scenario`` that ran (a wall time above zero)."""
        return [m for m in self.rows if m.scenario == scenario and m.wall_s > 0]

    def best(self, scenario: str) -> Measurement | None:
        return max(self.runs(scenario), key=lambda m: m.per_second, default=None)

    def ratio(self) -> float:
        ceiling, sync = self.best("ceiling"), self.best("sync")
        if ceiling is None or sync is None or ceiling.per_second <= 0:
            return 0.0
        return sync.per_second / ceiling.per_second

    def median_ratio(self) -> float:
        """The sync's median rate over the ceiling's: one lucky run of either, which decides
        ``ratio`` on a noisy machine, does not move it."""
        ceiling, sync = self.runs("ceiling"), self.runs("sync")
        if not ceiling or not sync:
            return 0.0
        return statistics.median(m.per_second for m in sync) / statistics.median(
            m.per_second for m in ceiling
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "validation": self.condition.validation,
            "rtt_ms": self.condition.rtt_ms,
            "rows": [m.to_json() for m in self.rows],
            "x_ceiling": round(self.ratio(), 3),
            "x_ceiling_median": round(self.median_ratio(), 3),
        }


def origin_of(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


@contextmanager
def latency_proxy(origin: str, work: Path) -> Iterator[str]:
    """A toxiproxy in front of ``origin`` adding RTT_MS of round trip; yields its origin."""
    binary = find_or_install()
    netloc = urlsplit(origin).netloc
    with Toxiproxy(binary, work / "toxiproxy.log") as toxi:
        proxy = toxi.proxy("bench-rtt", netloc)
        proxy.add_toxic("rtt-up", "latency", stream="upstream", latency=UP_MS)
        proxy.add_toxic("rtt-down", "latency", stream="downstream", latency=DOWN_MS)
        yield proxy.url("")


def run_condition(
    cond: Condition,
    server: Server,
    base: str,
    home: Path,
    records: Path,
    work: Path,
    *,
    repeat: int,
    peers: bool,
    log_file: Path,
) -> Outcome:
    out = Outcome(cond)
    people = home / "people.json"

    def scenario(name: str, args: list[str]) -> None:
        server.fresh(people)
        (m,) = run_worker(args, log_file)
        m.scenario = name
        m.extra["load_before"] = round(os.getloadavg()[0], 2)
        out.rows.append(m)
        log(f"{cond.label}: {name}: {m.resources} in {m.wall_s:.2f}s ({m.per_second:.0f}/s)")

    ceiling = ["ceiling", "--base-url", base, "--records", str(records)]
    state = work / "state-conditions.sqlite3"
    for _ in range(repeat):
        scenario("ceiling", ceiling)
        for stale in work.glob("state-conditions.sqlite3*"):
            stale.unlink()
        scenario("sync", ["sync", "--base-url", base, "--clinic", str(home), "--state", str(state)])
    if peers:
        scenario("fhirpy", ["fhirpy", "--base-url", base, "--records", str(records)])
        scenario("fhirclient", ["fhirclient", "--base-url", base, "--records", str(records)])
    return out


@dataclass(frozen=True)
class Cores:
    """``--split-cores``: the server's CPU and the clients'."""

    server_cpu: int
    client_cpus: frozenset[int]

    @property
    def server(self) -> str:
        """The server's CPU as ``taskset -c`` takes it."""
        return str(self.server_cpu)

    @property
    def clients(self) -> str:
        """The clients' CPUs as ``taskset -c`` takes them."""
        return ",".join(map(str, sorted(self.client_cpus)))


def split_cores(available: set[int], have_taskset: bool) -> Cores:
    """The last of ``available`` CPUs for the server, the rest for the clients."""
    if not have_taskset:
        raise SystemExit("--split-cores needs taskset (util-linux)")
    if len(available) < 2:
        raise SystemExit(
            f"--split-cores needs 2 CPUs or more; this process may use {len(available)}"
        )
    *clients, server = sorted(available)
    return Cores(server, frozenset(clients))


def _fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _peer(m: Measurement | None, sync_rate: float) -> tuple[str, str]:
    """A peer's resources/s and the sync's factor over it."""
    if m is None or m.per_second <= 0:
        return "-", "-"
    return _fmt(m.per_second), f"{sync_rate / m.per_second:.1f}x"


def render(
    outcomes: list[Outcome],
    machine: Machine,
    *,
    size: int,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    minutes: float,
    cores: Cores | None = None,
) -> str:
    """The conditions table (met / missed per condition) between the conditions markers
    (``cores``: the split-cores diagnostic, between its own markers)."""
    resources = next((m.resources for o in outcomes for m in o.rows if m.scenario == "sync"), 0)
    scope = f"{size:,} assessments, {resources:,} resources"
    if cores is None:
        lines = [START, "", f"### Four server conditions ({scope})", ""]
    else:
        lines = [
            SPLIT_START,
            "",
            f"### Four server conditions, the server on a core of its own ({scope})",
            "",
            f"A diagnostic (`--split-cores`), not the measurement of the target: the server runs "
            f"on CPU {cores.server} only, every client (ceiling, sync, peers) and toxiproxy on "
            f"CPU {cores.clients}, as if the server were another machine. The server has one "
            "core here, so its ceiling is lower than in the table above.",
            "",
        ]
    lines += [
        f"Machine: {machine.cpu}, {machine.cores} cores; Python {machine.python}; server "
        f"{machine.server} (`/fhir` with request validation, `{NO_VALIDATION_PATH}` without; "
        f"one JVM, options `{machine.java_opts}`{collected_note(machine)}). Added RTT: "
        f"toxiproxy latency {UP_MS} ms up + {DOWN_MS} ms down. Load average (1/5/15 min) "
        f"{'/'.join(f'{x:.2f}' for x in load[0])} at start, "
        f"{'/'.join(f'{x:.2f}' for x in load[1])} at end; {minutes:.1f} min. Ceiling and sync: "
        "best of their runs, taken alternately; resources/s = resources written / wall; "
        "median x: the sync's median rate over the ceiling's (the same runs).",
        "",
        "| condition | ceiling res/s | alliance-fhir res/s | x ceiling | median x "
        "| sync client CPU s "
        "| fhirpy res/s | fhirclient res/s | sync / fhirpy | sync / fhirclient "
        f"| sync >= {TARGET_CEILING_RATIO}x ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        ceiling, sync = o.best("ceiling"), o.best("sync")
        fhirpy, fhirclient = o.best("fhirpy"), o.best("fhirclient")
        rate = sync.per_second if sync else 0.0

        py_rate, py_x = _peer(fhirpy, rate)
        fc_rate, fc_x = _peer(fhirclient, rate)
        ratio = o.ratio()
        met = "met" if ratio >= TARGET_CEILING_RATIO else "**missed**"
        lines.append(
            f"| {o.condition.label} | {_fmt(ceiling.per_second if ceiling else 0.0)} "
            f"| {_fmt(rate)} | {ratio:.2f} | {o.median_ratio():.2f} "
            f"| {_fmt(sync.cpu_s if sync else 0.0, 2)} "
            f"| {py_rate} | {fc_rate} | {py_x} | {fc_x} | {met} ({verdict_ratio(ratio)}) |"
        )
    lines += ["", END if cores is None else SPLIT_END]
    return "\n".join(lines)


def write_block(block: str, out: Path) -> None:
    """Replace the block of ``out`` with the markers ``block`` has; one absent goes after
    the block it follows (the conditions after the results, the split-cores diagnostic
    after the conditions, else after the results), else at the end."""
    split = block.startswith(SPLIT_START)
    start, end = (SPLIT_START, SPLIT_END) if split else (START, END)
    follows = (END, RESULTS_END) if split else (RESULTS_END,)
    text = out.read_text(encoding="utf-8") if out.is_file() else "# Benchmarks\n"
    after = next((marker for marker in follows if marker in text), None)
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    elif after is not None:
        head, tail = text.split(after, 1)
        text = head + after + "\n\n" + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.conditions", description=__doc__)
    parser.add_argument("--size", type=int, default=300, help="assessments")
    parser.add_argument("--repeat", type=int, default=2, help="ceiling and sync runs each")
    parser.add_argument("--no-peers", action="store_true", help="leave fhirpy and fhirclient out")
    parser.add_argument("--port", type=int, default=8095, help="own server (started, stopped)")
    parser.add_argument("--base-url", help="a running server's /fhir (validating; never stopped)")
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--work", type=Path, default=REPO / ".bench")
    parser.add_argument(
        "--force",
        action="store_true",
        help=f"rewrite --out even when the 1-minute load at start is above {MAX_LOAD_TO_PUBLISH}",
    )
    parser.add_argument(
        "--split-cores",
        action="store_true",
        help="diagnostic: the server (started here) on the last CPU, every client on the others",
    )
    args = parser.parse_args(argv)
    cores: Cores | None = None
    if args.split_cores:
        if args.base_url is not None:
            parser.error("--split-cores runs the server it starts: leave --base-url out")
        cores = split_cores(os.sched_getaffinity(0), shutil.which("taskset") is not None)
    load_start = os.getloadavg()
    busy = too_busy(load_start[0], args.force, args.out, log)
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log_file = work / "workers.log"
    started_here = False
    base_url = args.base_url
    if base_url is None:
        base_url, started_here = start_server(
            args.port, cpus=None if cores is None else cores.server
        )
    if cores is not None:  # what this process starts from now on runs there too
        os.sched_setaffinity(0, cores.client_cpus)
    began = time.time()
    outcomes: list[Outcome] = []
    try:
        direct = Server(base_url)
        machine = machine_info(direct.software(), direct.port)
        origin = origin_of(base_url)
        home = clinic(work, args.size)
        records = work / f"records-{args.size}.jsonl"
        run_worker(
            ["export", "--base-url", base_url, "--clinic", str(home), "--out", str(records)],
            log_file,
        )
        with latency_proxy(origin, work) as proxied:
            for cond in CONDITIONS:
                path = urlsplit(base_url).path if cond.validation else NO_VALIDATION_PATH
                base = (proxied if cond.rtt_ms else origin) + path
                log(f"{cond.label}: {base} (load average {os.getloadavg()[0]:.2f})")
                direct.fresh(home / "people.json")  # warm the JIT on a few bundles
                warm = ["ceiling", "--base-url", base, "--records", str(records)]
                run_worker([*warm, "--limit", "2"], log_file)
                outcomes.append(
                    run_condition(
                        cond,
                        direct,
                        base,
                        home,
                        records,
                        work,
                        repeat=args.repeat,
                        peers=not args.no_peers,
                        log_file=log_file,
                    )
                )
        direct.reset()
        machine.collected = direct.collects
    finally:
        if started_here:
            fhir_server("stop", args.port)
    load_end = os.getloadavg()
    minutes = (time.time() - began) / 60
    block = render(
        outcomes,
        machine,
        size=args.size,
        load=(tuple(load_start), tuple(load_end)),
        minutes=minutes,
        cores=cores,
    )
    if args.json is not None:
        data = {
            "size": args.size,
            "machine": machine.to_json(),
            "load": [list(load_start), list(load_end)],
            "minutes": round(minutes, 1),
            "conditions": [o.to_json() for o in outcomes],
            "split_cores": None
            if cores is None
            else {"server": cores.server, "clients": cores.clients},
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(block)
    aside = work / f"BENCHMARKS.conditions{'-split' if cores else ''}.loaded.md"
    publish(partial(write_block, block), args.out, aside, busy=busy, load=load_start[0])
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
