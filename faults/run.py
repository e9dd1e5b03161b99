"""``python -m faults.run``: every fault scenario against a HAPI server of its own.

Starts HAPI on ``--port`` (default 8097) with a file-backed H2 database in a temporary
directory (so it can be SIGKILLed and restarted), toxiproxy in front of it and the status
shim, runs the scenarios, prints the table and exits non-zero unless every scenario
survived: nothing lost, nothing duplicated, the state store consistent with the server.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from alliance_fhir import log as alog
from faults.inbox import INBOX
from faults.scenarios import ALL, Harness, Outcome, ServerControl, run_scenario, table
from faults.shim import StatusShim
from faults.toxiproxy import Toxiproxy, find_or_install

#: Synthetic PHI of the example clinic: no log line of any scenario may carry it.
PHI = (
    "Okafor", "Adaeze", "Lindqvist", "Johan", "Marchetti", "Giulia", "Haddad", "Samir",
    "MRN-1001", "MRN-1002", "MRN-1003", "MRN-1004", "1988-03-14", "1975-11-02", "1999-07-21",
    "1962-01-30",
)  # fmt: skip


#: Every scenario: the client's faults, then the daemon inbox's (:mod:`faults.inbox`).
SCENARIOS = {**ALL, **INBOX}


def retried_requests(log_text: str) -> int:
    """Requests the client sent again (JSON log lines of ``fhir.request`` with attempt > 1)."""
    count = 0
    for line in log_text.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and int(event.get("attempt") or 1) > 1:
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults.run", description=__doc__)
    parser.add_argument("--port", type=int, default=8097, help="HAPI port (default 8097)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these")
    parser.add_argument("--keep", action="store_true", help="leave the server running")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)

    logs = io.StringIO()
    alog.configure(level="DEBUG", json=True, stream=logs)
    binary = find_or_install()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="alliance-faults-") as tmp:
        work = Path(tmp)
        server = ServerControl(args.port, work / "h2")
        print(f"faults: starting HAPI on port {args.port} (H2 files in {server.db_dir})")
        base_url = server.start()
        outcomes: list[Outcome] = []
        try:
            with (
                Toxiproxy(binary, work / "toxiproxy.log") as toxiproxy,
                StatusShim(f"http://127.0.0.1:{args.port}") as shim,
            ):
                proxy = toxiproxy.proxy("hapi", f"127.0.0.1:{args.port}")
                harness = Harness(base_url, proxy, shim, work, server=server, log_sink=logs.write)
                for name in names:
                    print(f"faults: {name} ...", flush=True)
                    mark = len(logs.getvalue())
                    outcome = run_scenario(harness, name, SCENARIOS)
                    outcome.retries = retried_requests(logs.getvalue()[mark:])
                    outcomes.append(outcome)
                    print(
                        f"faults: {name}: {'survived' if outcome.survived else 'FAILED'}"
                        f" in {outcome.seconds:.0f}s ({'; '.join(outcome.notes)})",
                        flush=True,
                    )
                    if outcome.check and outcome.check.state_errors:
                        for line in outcome.check.state_errors[:5]:
                            print(f"    state: {line}")
        finally:
            if not args.keep:
                server.stop()
    log_text = logs.getvalue()
    leaks = sorted({p for p in PHI if p in log_text})
    print()
    print(table(outcomes))
    survived = sum(o.survived for o in outcomes)
    lost = sum(o.check.lost for o in outcomes if o.check)
    dups = sum(o.check.duplicates for o in outcomes if o.check)
    print()
    print(
        f"{survived}/{len(outcomes)} scenarios survived; records lost {lost}, duplicates {dups};"
        f" {len(log_text.splitlines())} log lines scanned, PHI found in logs: {len(leaks)}"
        f" ({time.monotonic() - started:.0f}s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "scenario": o.name,
                        "fault": o.fault,
                        "expected": o.check.expected if o.check else None,
                        "found": o.check.found if o.check else None,
                        "duplicates": o.check.duplicates if o.check else None,
                        "lost": o.check.lost if o.check else None,
                        "state_errors": o.check.state_errors if o.check else None,
                        "under_fault": o.under_fault,
                        "notes": o.notes,
                        "survived": o.survived,
                        "error": o.error,
                    }
                    for o in outcomes
                ],
                indent=2,
            )
        )
    return 0 if survived == len(outcomes) and not leaks else 1


if __name__ == "__main__":
    sys.exit(main())
