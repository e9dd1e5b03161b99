"""The streamed import of a very large source, by hand (issue 15: 1,000,000 assessments in
under 250 MB peak RSS). Not in ``make test`` or ``make bench``: it takes many CPU minutes.

    python -m bench.stream --size 1000000 --work .bench/stream            # read, check, map
    python -m bench.stream --size 1000000 --work .bench/stream --read-only

What "import" means here: the path ``push assessments`` and ``sync`` take up to the network,
``app.records.assessment_windows`` - files read, records checked, scored, mapped to
QuestionnaireResponse + Observation and validated, a window of about 2,000 records at a time -
into a sink that counts the records and drops them (a sync sends each window, then drops it).
The state store and the server are left out on purpose: they are measured by ``bench.run`` and
``bench.resync``; this is about whether anything in the pipeline grows with the source.

The source is Session Rating Scale CSV files of 2,500 rows each (the shipped column map),
written once under ``--work`` (about 90 bytes a row): CSV because a million-record export is
a CSV in practice, and because writing it takes seconds where the YAML generator takes an
hour. RSS is printed every sixth of the way, and the peak at the end, so growth shows.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import resource
import time
from pathlib import Path

from bench.generate import SRS_HEADER

ROWS_PER_FILE = 2500


def write_source(size: int, where: Path) -> None:
    """``size`` SRS rows, 10 sessions a client, 20 clients a clinician; deterministic."""
    where.mkdir(parents=True, exist_ok=True)
    rng = random.Random(20240108)  # noqa: S311  # synthetic marks, not secrets
    for index in range((size + ROWS_PER_FILE - 1) // ROWS_PER_FILE):
        with (where / f"srs-{index:05d}.csv").open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(SRS_HEADER)
            for n in range(index * ROWS_PER_FILE, min(size, (index + 1) * ROWS_PER_FILE)):
                client, session = divmod(n, 10)
                marks = [f"{rng.randint(0, 100) / 10:.1f}" for _ in range(4)]
                out.writerow(
                    [
                        f"c{client:07d}-s{session + 1:02d}-srs",
                        "srs",
                        "1.0.0",
                        f"2024-02-{session % 28 + 1:02d}T14:51:00-05:00",
                        "completed",
                        session + 1,
                        f"MRN-{client:07d}",
                        str(1000000000 + client // 20),
                        *marks,
                    ]
                )


def rss_mb() -> float:
    """The process's resident set now (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="assessments")
    parser.add_argument("--work", type=Path, default=Path(".bench") / "stream")
    parser.add_argument("--read-only", action="store_true", help="read and check only")
    args = parser.parse_args(argv)
    source = args.work / f"srs-{args.size}"
    if not (source / "done").is_file():
        write_source(args.size, source)
        (source / "done").write_text("", encoding="utf-8")

    # imported after the source is written: the figures are the importer's alone
    from alliance_fhir.app.records import _assessments_by_file, assessment_windows
    from alliance_fhir.config import Settings
    from alliance_fhir.instruments.library import load_library

    settings = Settings(state_path=Path(os.devnull))
    library = load_library([])
    print(f"after imports: rss {rss_mb():.1f} MB", flush=True)
    count, problems = 0, 0
    step = max(1, args.size // 6)
    mark = step
    began_cpu, began = time.process_time(), time.monotonic()
    if args.read_only:
        for read in _assessments_by_file([source], library, settings):
            count += len(read.found)
            problems += len(read.problems)
            if count >= mark:
                print(f"{count:>9,} read: rss {rss_mb():.1f} MB", flush=True)
                mark += step
    else:
        for window in assessment_windows([source], library, settings):
            count += sum(1 for d in window.desired if d.kind == "assessment")
            problems += len(window.problems)
            if count >= mark:
                print(f"{count:>9,} mapped: rss {rss_mb():.1f} MB", flush=True)
                mark += step
    cpu, wall = time.process_time() - began_cpu, time.monotonic() - began
    print(
        f"{'read' if args.read_only else 'imported'} {count:,} assessments ({problems} problems) "
        f"in {cpu:.1f} CPU s ({wall:.1f} s wall, load {os.getloadavg()[0]:.1f}); "
        f"peak RSS {peak_mb():.1f} MB",
        flush=True,
    )


if __name__ == "__main__":
    main()
