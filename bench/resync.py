"""Re-sync at scale with source fingerprints (issue #15, item 5): run by hand, not in CI.

For each size it measures, against a running FHIR server:

* ``unchanged``: a re-sync when no source file changed (target at 100,000 assessments:
  <= 3 s wall, 1 request), in process and as the ``alliance-fhir sync`` command (process
  start included). The first one after records were written compares every file's records
  with the state (``unchanged``); later ones find the state generation unchanged and skip
  that (``unchanged_again``, and the command), as a daemon's cycles do;
* ``full plan``: ``sync --dry-run --full``, every file read, checked, mapped and planned
  (what every re-sync cost before fingerprints);
* ``1% changed``: the generator's ``--changed 0.01`` (one answer of every 100th assessment;
  spread evenly, so it touches many files) and, separately, 1% of the files changed; each
  as a dry-run plan (target <= 10% of the full plan).

``--seed-state`` (for sizes the server cannot take in the time at hand): instead of a first
real sync, instruments are published for real and the state store is filled from the mapped
records with made-up server ids (older than the instruments' rows, so the run's one
liveness read hits a real Questionnaire). What is timed afterwards is unchanged: the same
code path, reading the same state. Without it, the first sync is real.

    python -m bench.resync --size 4000 --base-url http://127.0.0.1:8406/fhir
    python -m bench.resync --size 100000 --seed-state --base-url http://127.0.0.1:8406/fhir
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.generate import generate

REPO = Path(__file__).resolve().parents[1]


class _Counting(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.counts[request.method] += 1
        return super().handle_request(request)


def _settings(base_url: str, clinic: Path, state: Path) -> Any:
    from alliance_fhir.config import Settings

    return Settings(
        server_url=base_url,
        state_path=state,
        assessments=[clinic / "assessments"],
        identifier_namespace="http://bench-resync.example.org/identifier",
    )


def _sync(settings: Any, **options: Any) -> dict[str, Any]:
    """One ``AllianceFhir.sync`` in process: wall and CPU seconds (this process, all its
    threads; ``status`` not included), requests, counts, files skipped."""
    from alliance_fhir.api import AllianceFhir

    transport = _Counting()
    started, cpu = time.perf_counter(), time.process_time()
    with AllianceFhir(settings, transport=transport) as api:
        report = api.sync(labels_only=True, **options)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        sources = api.status(runs=1).sources
    counts = dict(report.result.counts) if report.result is not None else dict(report.plan)
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "requests": sum(transport.counts.values()),
        "counts": counts,
        "files_skipped": report.result.files_skipped if report.result is not None else None,
        "sources": sources,
        "problems": len(report.problems),
    }


def _cli_sync(settings: Any, workdir: Path) -> dict[str, Any]:
    """``alliance-fhir sync --labels-only`` as a user runs it: wall seconds incl. start-up."""
    env = {
        **os.environ,
        "ALLIANCE_FHIR_SERVER_URL": settings.server_url,
        "ALLIANCE_FHIR_STATE_PATH": str(settings.state_path),
        "ALLIANCE_FHIR_ASSESSMENTS": json.dumps([str(p) for p in settings.assessments]),
        "ALLIANCE_FHIR_IDENTIFIER_NAMESPACE": settings.identifier_namespace,
    }
    exe = Path(sys.executable).with_name("alliance-fhir")
    started = time.perf_counter()
    done = subprocess.run(
        [str(exe), "sync", "--labels-only"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    line = next((x for x in done.stdout.splitlines() if x.startswith("run ")), "")
    return {"seconds": round(seconds, 3), "exit": done.returncode, "line": line.split(": ", 1)[-1]}


def _seed_state(settings: Any) -> dict[str, Any]:
    """Publish for real, then fill the state from the mapped records (see module doc)."""
    from alliance_fhir.api import AllianceFhir

    started = time.perf_counter()
    with AllianceFhir(settings) as api:
        published = api.publish(labels_only=True)
        assert published.ok, published.result and published.result.failures
        records = api.assessment_records(settings.assessments, fingerprints=True, labels_only=True)
        store = api.store
        with store.transaction() as db:
            for n, d in enumerate(records.desired):
                store.record(
                    kind=d.kind,
                    key=d.key,
                    resource_type=d.resource_type,
                    server_id=f"seeded-{n}",
                    version_id="1",
                    content_hash=d.hash,
                    status="synced",
                    run_id="seeded",
                    db=db,
                )
            db.execute("UPDATE resources SET last_sync=0 WHERE run_id='seeded'")
    return {"seconds": round(time.perf_counter() - started, 3), "records": len(records.desired)}


def _synthetic_state(settings: Any) -> dict[str, Any]:
    """Publish for real, then fill the state *without mapping*: per file its real sha256
    and context, per assessment two records ("assessment", "score") with made-up hashes
    that the resources rows repeat. What the unchanged re-sync does with it (hash every
    file, load the fingerprints and the synced hashes, compare, one liveness read; the next
    one skips the comparison) is the real code path; only the mapping that would have
    produced the hashes is skipped (under today's load, mapping 100,000 assessments took
    over an hour)."""
    from alliance_fhir.api import AllianceFhir
    from alliance_fhir.app.fingerprints import file_sha256
    from alliance_fhir.sync.state.sources import SourceFingerprint

    started = time.perf_counter()
    with AllianceFhir(settings) as api:
        published = api.publish(labels_only=True)
        assert published.ok, published.result and published.result.failures
        context = api.source_index(labels_only=True).context
        store = api.store
        found: list[SourceFingerprint] = []
        n = 0
        with store.transaction() as db:
            for path in sorted(p for p in settings.assessments[0].rglob("*") if p.is_file()):
                text = path.read_text()
                count = text.count("- key:") if path.suffix == ".yaml" else text.count("\n") - 1
                records = []
                for i in range(count):
                    for kind, rtype in (
                        ("assessment", "QuestionnaireResponse"),
                        ("score", "Observation"),
                    ):
                        key, chash = f"{path.stem}-{i}", f"h{n}"
                        records.append((kind, key, chash, None))
                        store.record(
                            kind=kind,
                            key=key,
                            resource_type=rtype,
                            server_id=f"seeded-{n}",
                            version_id="1",
                            content_hash=chash,
                            status="synced",
                            run_id="seeded",
                            db=db,
                        )
                        n += 1
                st = path.stat()
                found.append(
                    SourceFingerprint(
                        _key(path),
                        st.st_size,
                        st.st_mtime_ns,
                        st.st_ino,
                        file_sha256(path),
                        context,
                        tuple(records),
                    )
                )
            db.execute("UPDATE resources SET last_sync=0 WHERE run_id='seeded'")
        store.save_source_fingerprints(found)
    return {"seconds": round(time.perf_counter() - started, 3), "records": n, "files": len(found)}


def _key(path: Path) -> str:
    from alliance_fhir.app.fingerprints import _path_key

    return _path_key(path)


def _change_files(clinic: Path, fraction: float) -> dict[Path, str]:
    """Alter one answer in ``fraction`` of the record files (every n-th file); their texts
    before, to put back."""
    files = sorted((clinic / "assessments").rglob("*.yaml"))
    step = max(1, round(1 / fraction))
    before: dict[Path, str] = {}
    for path in files[::step]:
        text = path.read_text()
        for old, new in ((": '3'", ": '4'"), (": '4'", ": '3'"), (": '2'", ": '3'")):
            if old in text:
                path.write_text(text.replace(old, new, 1))
                before[path] = text
                break
    return before


def _post_people(base_url: str, clinic: Path) -> None:
    """The clinic's Patients and Practitioners (one transaction; never timed)."""
    seeded = httpx.post(
        base_url,
        content=(clinic / "people.json").read_bytes(),
        headers={"Content-Type": "application/fhir+json"},
        timeout=600,
    )
    seeded.raise_for_status()


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def measure(
    size: int,
    base_url: str,
    work: Path,
    *,
    seed_state: bool,
    synthetic: bool = False,
    only_unchanged: bool = False,
) -> dict[str, Any]:
    clinic = work / f"clinic-{size}"
    manifest = clinic / "manifest.json"
    if not manifest.exists() or json.loads(manifest.read_text()).get("changed"):
        generate(size, clinic, goals=False)  # deterministic: the same clinic every time
    state = work / f"state-{size}" / "state.sqlite3"
    if state.parent.exists():
        shutil.rmtree(state.parent)
    settings = _settings(base_url, clinic, state)
    if not seed_state:  # a seeded state writes no assessment, so needs no people
        _post_people(base_url, clinic)
    out: dict[str, Any] = {"size": size, "load_before": _load(), "seeded": seed_state}
    step: Callable[[str], None] = lambda name: print(  # noqa: E731
        f"[{size}] {name} (so far: {json.dumps(out)})", file=sys.stderr, flush=True
    )
    step("first sync" if not seed_state else "seed state")
    if synthetic:
        out["first"] = _synthetic_state(settings)
    else:
        out["first"] = _seed_state(settings) if seed_state else _sync(settings)
    step("unchanged (in process)")
    out["unchanged"] = _sync(settings)
    step("unchanged again (in process)")
    out["unchanged_again"] = _sync(settings)
    step("unchanged (command)")
    out["unchanged_cli"] = _cli_sync(settings, work)
    if only_unchanged:
        out["load_after"] = _load()
        return out
    step("full plan")
    out["full_plan"] = _sync(settings, dry_run=True, full=True)
    step("unchanged plan")
    out["unchanged_plan"] = _sync(settings, dry_run=True)
    generate(size, clinic, goals=False, changed=0.01)
    step("1% of assessments changed (plan)")
    out["changed_assessments_plan"] = _sync(settings, dry_run=True)
    generate(size, clinic, goals=False)  # back to the synced content
    before = _change_files(clinic, 0.01)
    out["changed_files"] = len(before)
    step("1% of files changed (plan)")
    out["changed_files_plan"] = _sync(settings, dry_run=True)
    for path, text in before.items():
        path.write_text(text)
    out["load_after"] = _load()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.resync", description=__doc__)
    parser.add_argument("--size", type=int, action="append", help="assessments (repeatable)")
    parser.add_argument("--base-url", required=True, help="a running FHIR server")
    parser.add_argument("--seed-state", action="store_true", help="see the module doc")
    parser.add_argument("--synthetic-state", action="store_true", help="see _synthetic_state")
    parser.add_argument("--only-unchanged", action="store_true", help="no plan rows")
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "resync")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    results = [
        measure(
            size,
            args.base_url,
            args.work,
            seed_state=args.seed_state or args.synthetic_state,
            synthetic=args.synthetic_state,
            only_unchanged=args.only_unchanged,
        )
        for size in args.size or [4000]
    ]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
