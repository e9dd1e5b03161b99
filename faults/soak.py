"""A bounded soak of the daemon: inbox files arriving while the server goes away and back.

``make soak`` (not part of ``make test``): our own file-backed HAPI on ``--port``, a daemon
(a real ``alliance-fhir daemon`` process, 3 s interval), a writer dropping ``--files`` inbox
files of ``--per-file`` check-ins each, one every ``--every`` seconds, and the server stopped
``--outage-at`` seconds in and started again ``--down`` seconds later (HAPI then takes its
usual 20-60 s to come up). When every file is archived (or ``--deadline`` passes) the daemon
gets SIGTERM. Figures: check-ins on the server against those written (each exactly once),
files processed/failed, the daemon's RSS and open fds at start, peak and end, the exit code
and whether it logged ``daemon.stopped``. Exit 0 when every invariant held.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from faults.scenarios import REPO, ServerControl

PEOPLE = REPO / "examples" / "clinic" / "people.json"
TEMPLATE = REPO / "examples" / "clinic" / "assessments" / "mrn-1001.yaml"
MRNS = ("MRN-1001", "MRN-1002", "MRN-1003", "MRN-1004")


@dataclass
class Figures:
    files: int = 0
    checkins_written: int = 0
    checkins_on_server: int = 0
    files_processed: int = 0
    files_failed: int = 0
    outage_seconds: float = 0.0
    seconds: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None
    stopped_logged: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _inbox_file(index: int, per_file: int) -> str:
    doc: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))
    first = doc["assessments"][0]
    doc["defaults"]["patient"]["value"] = MRNS[index % len(MRNS)]
    doc["assessments"] = [
        {
            **first,
            "key": f"soak-{index:03d}-{n}",
            "authored": f"2024-{1 + n % 12:02d}-{1 + index % 28:02d}T10:{n % 60:02d}:00+00:00",
            "session": n + 1,
        }
        for n in range(per_file)
    ]
    return yaml.safe_dump(doc, sort_keys=False)


def _proc_figures(pid: int) -> tuple[float, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss_kb = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:"))
    return rss_kb / 1024, fds


def _count(base_url: str, resource_type: str) -> int:
    response = httpx.get(
        f"{base_url}/{resource_type}",
        params={"_summary": "count"},
        headers={"Cache-Control": "no-cache"},
        timeout=60,
    )
    response.raise_for_status()
    return int(response.json()["total"])


def soak(args: argparse.Namespace, work: Path) -> Figures:
    figures = Figures(files=args.files, checkins_written=args.files * args.per_file)
    server = ServerControl(args.port, work / "h2")
    print(f"soak: starting HAPI on port {args.port}", flush=True)
    base_url = server.start()
    try:
        settings = Settings(server_url=base_url, state_path=work / "seed.sqlite3")
        with AllianceFhir(settings) as api:
            api.seed(PEOPLE)
        before = _count(base_url, "QuestionnaireResponse")
        inbox = work / "inbox"
        env = {
            **os.environ,
            "ALLIANCE_FHIR_SERVER_URL": base_url,
            "ALLIANCE_FHIR_STATE_PATH": str(work / "state" / "state.sqlite3"),
            "ALLIANCE_FHIR_INBOX_DIR": str(inbox),
            "ALLIANCE_FHIR_INTERVAL_SECONDS": "3",
            "ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS": "20",
            "ALLIANCE_FHIR_LOG_JSON": "true",
        }
        argv = [sys.executable, "-m", "alliance_fhir.cli", "daemon", "--labels-only"]
        argv += ["--no-metrics", "--no-monitoring", "--settle-seconds", "1", "--backoff-max", "5"]
        log_path = work / "daemon.log"
        started = time.monotonic()
        with log_path.open("w") as log:
            daemon = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            samples: list[tuple[float, int]] = []
            done = threading.Event()

            def sample() -> None:
                while not done.wait(2.0):
                    got = _proc_figures(daemon.pid)
                    if got is not None:
                        samples.append(got)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()

            def outage() -> None:
                time.sleep(args.outage_at)
                print("soak: stopping the server", flush=True)
                down = time.monotonic()
                server.stop()
                time.sleep(args.down)
                server.start()
                figures.outage_seconds = round(time.monotonic() - down, 1)
                print(f"soak: server back after {figures.outage_seconds}s", flush=True)

            outages = threading.Thread(target=outage, daemon=True)
            outages.start()
            time.sleep(3)
            inbox.mkdir(parents=True, exist_ok=True)
            for index in range(args.files):
                tmp = inbox / f".soak-{index:03d}.part"
                tmp.write_text(_inbox_file(index, args.per_file), encoding="utf-8")
                tmp.rename(inbox / f"soak-{index:03d}.yaml")
                time.sleep(args.every)
            deadline = started + args.deadline
            processed = inbox / "processed"
            failed = inbox / "failed"
            while time.monotonic() < deadline:
                archived = len(list(processed.glob("*.yaml"))) + len(list(failed.glob("*.yaml")))
                if archived >= args.files and not outages.is_alive():
                    break
                time.sleep(2)
            daemon.send_signal(signal.SIGTERM)
            try:
                figures.exit_code = daemon.wait(timeout=120)
            except subprocess.TimeoutExpired:
                daemon.kill()
                figures.exit_code = daemon.wait()
                figures.problems.append("the daemon did not stop within 120 s of SIGTERM")
            done.set()
        figures.seconds = round(time.monotonic() - started, 1)
        figures.files_processed = len(list(processed.glob("*.yaml")))
        figures.files_failed = len(list(failed.glob("*.yaml")))
        figures.checkins_on_server = _count(base_url, "QuestionnaireResponse") - before
        figures.stopped_logged = '"daemon.stopped"' in log_path.read_text()
        if samples:
            rss = [s[0] for s in samples]
            fds = [s[1] for s in samples]
            figures.rss_mb = {"start": rss[0], "peak": max(rss), "end": rss[-1]}
            figures.rss_mb = {k: round(v, 1) for k, v in figures.rss_mb.items()}
            figures.fds = {"start": fds[0], "peak": max(fds), "end": fds[-1]}
    finally:
        server.stop()
    if figures.checkins_on_server != figures.checkins_written:
        figures.problems.append(
            f"{figures.checkins_on_server} check-ins on the server, "
            f"{figures.checkins_written} written"
        )
    if figures.files_processed != figures.files:
        figures.problems.append(f"{figures.files_processed} of {figures.files} files processed")
    if figures.exit_code != 0 or not figures.stopped_logged:
        figures.problems.append(f"exit {figures.exit_code}, daemon.stopped logged: "
                                f"{figures.stopped_logged}")  # fmt: skip
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.soak", description=__doc__)
    parser.add_argument("--port", type=int, default=8098, help="HAPI port (default 8098)")
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--per-file", type=int, default=8)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between files")
    parser.add_argument("--outage-at", type=float, default=30.0)
    parser.add_argument("--down", type=float, default=15.0, help="seconds before restarting")
    parser.add_argument("--deadline", type=float, default=900.0, help="give up after (s)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    alog.configure(level="WARNING")  # the figures are the output; the daemon keeps its log
    with tempfile.TemporaryDirectory(prefix="alliance-soak-") as tmp:
        figures = soak(args, Path(tmp))
    data = {**asdict(figures), "ok": figures.ok}
    print(json.dumps(data, indent=2))
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0 if figures.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
