"""One benchmark scenario in one process: ``python -m bench.worker SCENARIO [options]``.

Each scenario prints one JSON line per measurement (``bench.measure.Measurement``). What is
inside the timed block, per scenario:

* ``sync``      - ``AllianceFhir.sync(labels_only=True)`` with default settings (bundle 100,
                  concurrency 2): read files, map, validate, plan, resolve people, send, record
                  state. Requests counted by an ``httpx`` transport wrapper.
* ``ceiling``   - POSTing pre-built transaction bundles (built and serialized before the
                  clock starts: same entries as the sync's first run, people resolved) from a
                  bare ``httpx.Client`` with the same bundle size and concurrency.
* ``fhirpy`` / ``fhirclient`` - one create per resource the way their docs show
                  (``client.resource(...).save()`` / ``Model(json).create(server)``),
                  sequential, people looked up by identifier once each, own references
                  replaced by the server ids of earlier creates. The mapped resources are
                  given to them ready-made (our mapping is not in their time).
* ``mapping``   - reading the clinic's assessment files (checked records), then assessment
                  -> QuestionnaireResponse + Observation, validated (``validate`` setting,
                  default ``shape``) and serialized, pinned to one core; and the plain
                  fhir.resources baseline on the same resources.
* ``import``    - reading + mapping the clinic's assessments (peak RSS is the point).
* ``export``    - (not a measurement) writes the records file for ``ceiling`` and the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.measure import Measurement, emit, peak_rss_mb, timed
from bench.records import (
    Record,
    chunk_groups,
    creation_order,
    groups_of,
    person_tokens,
    prune_unresolved,
    read_records,
    resolve,
)

FHIR_JSON = "application/fhir+json"
WARM_UP = 20  # assessments mapped before the mapping clock starts


def _pin_one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


# -- alliance-fhir -------------------------------------------------------------------------


def _counting_transport() -> Any:
    import httpx

    class CountingTransport(httpx.HTTPTransport):
        def __init__(self) -> None:
            super().__init__()
            self.counts: Counter[str] = Counter()
            self._lock = threading.Lock()

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            with self._lock:
                self.counts[request.method] += 1
            return super().handle_request(request)

    return CountingTransport()


def _settings(base_url: str, clinic: Path, state: Path) -> Any:
    from alliance_fhir.config import Settings

    return Settings(
        server_url=base_url,
        state_path=state,
        assessments=[clinic / "assessments"],
        goals=[clinic / "goals"],
    )


def run_sync(base_url: str, clinic: Path, state: Path, name: str) -> None:
    from alliance_fhir import log as alog
    from alliance_fhir.api import AllianceFhir

    settings = _settings(base_url, clinic, state)
    # as the CLI does: the configured level (INFO by default), JSON lines on stderr
    alog.configure(level=settings.log_level, json=settings.log_json)
    transport = _counting_transport()
    m = Measurement(name)
    with timed(m), AllianceFhir(settings, transport=transport) as api:
        report = api.sync(labels_only=True)
    result = report.result
    counts = dict(result.counts) if result is not None else {}
    m.resources = counts.get("created", 0) + counts.get("updated", 0)
    m.requests = sum(transport.counts.values())
    m.writes = sum(n for method, n in transport.counts.items() if method not in ("GET", "HEAD"))
    m.extra = {
        "counts": counts,
        "records": sum(counts.get(k, 0) for k in ("created", "updated", "unchanged")),
        "bundles": result.bundles if result is not None else 0,
        "problems": len(report.problems),
        "failures": (result.failures[:5] if result is not None else []),
        "methods": dict(transport.counts),
    }
    emit(m)


def run_export(base_url: str, clinic: Path, out: Path) -> None:
    """Every record a sync of ``clinic`` writes, in the order it writes them."""
    from alliance_fhir.api import AllianceFhir
    from alliance_fhir.app.records import instrument_records
    from bench.records import write_records

    settings = _settings(base_url, clinic, out.with_suffix(".unused.sqlite3"))
    with AllianceFhir(settings) as api:
        records = instrument_records(api.library, settings, labels_only=True)
        records.extend(api.assessment_records(settings.assessments))
        records.extend(api.goal_records(settings.goals))
    if records.problems:
        raise SystemExit(f"the clinic has input problems: {records.problems[:3]}")
    n = write_records(
        (Record(d.kind, d.key, d.uuid, d.group, d.search, d.resource) for d in records.desired),
        out,
    )
    m = Measurement("export", resources=n)
    emit(m)


# -- the ceiling -----------------------------------------------------------------------------


def _resolve_people_httpx(http: Any, tokens: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    people: dict[tuple[str, str], str] = {}
    by_type: dict[str, list[str]] = {}
    for rtype, token in sorted(tokens):
        by_type.setdefault(rtype, []).append(token)
    for rtype, items in by_type.items():
        for start in range(0, len(items), 50):
            part = items[start : start + 50]
            resp = http.get(
                rtype,
                params={"identifier": ",".join(part), "_count": "100"},
                headers={"Cache-Control": "no-cache"},
            )
            resp.raise_for_status()
            for entry in resp.json().get("entry") or []:
                res = entry["resource"]
                for ident in res.get("identifier") or []:
                    people[(rtype, f"{ident['system']}|{ident['value']}")] = f"{rtype}/{res['id']}"
    missing = {t for t in tokens if t not in people}
    if missing:
        raise SystemExit(f"{len(missing)} people not on the server (seeded?)")
    return people


def run_ceiling(
    base_url: str, records_path: Path, bundle_size: int, concurrency: int, limit: int | None
) -> None:
    import httpx

    records = read_records(records_path)
    http = httpx.Client(
        base_url=base_url.rstrip("/") + "/",
        timeout=300,
        headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
        limits=httpx.Limits(max_connections=concurrency * 2),
    )
    people = _resolve_people_httpx(http, person_tokens(records))
    bundles: list[bytes] = []
    sizes: list[int] = []
    for members in chunk_groups(groups_of(records), bundle_size):
        entries = [
            {
                "fullUrl": r.uuid,
                "resource": resolve(r.resource, people, lambda _uuid: None),
                "request": {"method": "POST", "url": r.resource_type, "ifNoneExist": r.search},
            }
            for r in members
        ]
        body = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        bundles.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
        sizes.append(len(entries))
    if limit is not None:
        bundles, sizes = bundles[:limit], sizes[:limit]
    del records
    sent = Counter[str]()
    lock = threading.Lock()

    def post(body: bytes) -> None:
        resp = http.post("", content=body)
        with lock:
            sent["POST"] += 1
        if resp.status_code != 200:
            raise SystemExit(f"transaction failed: HTTP {resp.status_code}: {resp.text[:500]}")

    m = Measurement("ceiling")
    with timed(m), ThreadPoolExecutor(max_workers=concurrency) as pool:
        for _ in pool.map(post, bundles):
            pass
    http.close()
    m.resources = sum(sizes)
    m.requests = m.writes = sent["POST"]
    m.extra = {"bundles": len(bundles), "bundle_size": bundle_size, "concurrency": concurrency}
    emit(m)


# -- the peers ---------------------------------------------------------------------------------


def _count_requests() -> Counter[str]:
    """Count every request the ``requests`` library sends (both peers use it)."""
    import requests

    counts: Counter[str] = Counter()
    original = requests.Session.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        counts[str(request.method)] += 1
        return original(self, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign]
    return counts


def _run_peer(
    name: str,
    records_path: Path,
    find_person: Callable[[str, str], str],
    create: Callable[[dict[str, Any]], str],
    update: Callable[[dict[str, Any]], None],
    counts: Counter[str],
) -> None:
    records = read_records(records_path)
    groups = groups_of(records)
    m = Measurement(name)
    created = updated = 0
    with timed(m):
        people: dict[tuple[str, str], str] = {}
        ids: dict[str, str] = {}
        for group in groups:
            later: list[Record] = []
            for r in creation_order(group):
                for rtype, token in person_tokens([r]):
                    if (rtype, token) not in people:
                        people[(rtype, token)] = find_person(rtype, token)
                resource, dropped = prune_unresolved(resolve(r.resource, people, ids.get))
                ids[r.uuid] = create(resource)
                created += 1
                if dropped:
                    later.append(r)
            for r in later:  # the links a reference cycle kept out of the create
                resource = resolve(r.resource, people, ids.get)
                resource["id"] = ids[r.uuid].rsplit("/", 1)[-1]
                update(resource)
                updated += 1
    m.resources = created
    m.requests = sum(counts.values())
    m.writes = sum(n for method, n in counts.items() if method.upper() not in ("GET", "HEAD"))
    m.extra = {"methods": dict(counts), "sequential": True, "cycle_updates": updated}
    emit(m)


def run_fhirpy(base_url: str, records_path: Path) -> None:
    from fhirpy import SyncFHIRClient

    counts = _count_requests()
    client = SyncFHIRClient(base_url, extra_headers={"Cache-Control": "no-cache"})

    def find_person(rtype: str, token: str) -> str:
        found = client.resources(rtype).search(identifier=token).first()
        if found is None:
            raise SystemExit(f"{rtype} not on the server (seeded?)")
        return f"{rtype}/{found.id}"

    def create(resource: dict[str, Any]) -> str:
        data = dict(resource)
        rtype = str(data.pop("resourceType"))
        saved = client.resource(rtype, **data)
        saved.save()
        return f"{rtype}/{saved.id}"

    def update(resource: dict[str, Any]) -> None:
        data = dict(resource)
        client.resource(str(data.pop("resourceType")), **data).save()

    _run_peer("fhirpy", records_path, find_person, create, update, counts)


def run_fhirclient(base_url: str, records_path: Path) -> None:
    from fhirclient.models.fhirelementfactory import FHIRElementFactory
    from fhirclient.server import FHIRServer

    counts = _count_requests()
    server = FHIRServer(None, base_uri=base_url.rstrip("/") + "/")

    def find_person(rtype: str, token: str) -> str:
        model = FHIRElementFactory.instantiate(rtype, None).__class__
        found = model.where(struct={"identifier": token}).perform_resources(server)
        if not found:
            raise SystemExit(f"{rtype} not on the server (seeded?)")
        return f"{rtype}/{found[0].id}"

    def create(resource: dict[str, Any]) -> str:
        rtype = str(resource["resourceType"])
        model = FHIRElementFactory.instantiate(rtype, resource)
        answer = model.create(server)
        return f"{rtype}/{answer['id']}"

    def update(resource: dict[str, Any]) -> None:
        FHIRElementFactory.instantiate(str(resource["resourceType"]), resource).update(server)

    _run_peer("fhirclient", records_path, find_person, create, update, counts)


# -- mapping and memory ----------------------------------------------------------------------


def run_mapping(clinic: Path, limit: int) -> None:
    """Ours (map + validate + serialize) and the plain fhir.resources baseline, one core."""
    _pin_one_core()
    from alliance_fhir.adapters.fhirjson import dumps
    from alliance_fhir.app.records import assessment_records, read_assessment_files
    from alliance_fhir.config import Settings
    from alliance_fhir.heap import run_heap
    from alliance_fhir.instruments.library import load_library

    settings = Settings(state_path=Path(os.devnull))
    library = load_library([])
    r = Measurement("reading")
    # each block runs with the collector set as push and sync set it (alliance_fhir.heap),
    # the baseline's too: the rows compare the work, not the collector's settings
    with timed(r), run_heap():  # files -> checked Assessments: YAML record files and CSV
        assessments, problems = read_assessment_files([clinic / "assessments"], library, settings)
    assert not problems, problems[:3]
    r.resources = len(assessments)
    r.extra = {"unit": "assessments", "cores": 1}
    emit(r)

    def map_all(batch: list[Any]) -> tuple[list[dict[str, Any]], int]:
        # The very path push and sync take: check, score, map, validate (per record).
        records = assessment_records(batch, library, settings)
        assert not records.problems, records.problems[:3]
        made = [record.resource for record in records.desired]
        return made, sum(len(dumps(resource)) for resource in made)

    assessments = assessments[:limit]
    map_all(assessments[:WARM_UP])  # first use builds the models' validators: not timed
    m = Measurement("mapping")
    with timed(m), run_heap():
        made, out_bytes = map_all(assessments)
    m.resources = len(made)
    m.extra = {
        "assessments": len(assessments),
        "bytes": out_bytes,
        "cores": 1,
        "validate": settings.validation,
    }
    emit(m)

    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

    models: dict[str, Any] = {
        "QuestionnaireResponse": QuestionnaireResponse,
        "Observation": Observation,
    }
    for resource in made[: 2 * WARM_UP]:
        models[resource["resourceType"]].model_validate(resource).model_dump_json()
    base_bytes = 0
    b = Measurement("baseline")
    with timed(b), run_heap():
        for resource in made:
            base_bytes += len(
                models[resource["resourceType"]].model_validate(resource).model_dump_json()
            )
    b.resources = len(made)
    b.extra = {"bytes": base_bytes, "cores": 1}
    emit(b)


def run_import(clinic: Path, read_only: bool) -> None:
    """Peak RSS of reading (and mapping) every assessment of ``clinic``."""
    from alliance_fhir.api import AllianceFhir
    from alliance_fhir.app.records import assessment_windows, read_assessment_files
    from alliance_fhir.config import Settings

    settings = Settings(state_path=Path(os.devnull))
    api = AllianceFhir(settings)
    _ = api.library
    baseline = peak_rss_mb()
    m = Measurement("read" if read_only else "import")
    with timed(m):
        if read_only:
            assessments, problems = read_assessment_files(
                [clinic / "assessments"], api.library, settings
            )
            m.resources = len(assessments)
        else:
            # The path `push assessments` takes: files read, checked, scored, mapped and
            # validated a window at a time; each window is dropped once counted (here) or
            # sent (in a sync).
            problems = []
            m.resources = 0
            for window in assessment_windows([clinic / "assessments"], api.library, settings):
                problems.extend(window.problems)
                m.resources += len(window.desired)
    m.extra = {"rss_before_mb": round(baseline, 1), "problems": len(problems)}
    emit(m)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    sub = parser.add_subparsers(dest="scenario", required=True)
    p = sub.add_parser("sync")
    p.add_argument("--base-url", required=True)
    p.add_argument("--clinic", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True)
    p.add_argument("--name", default="sync")
    p = sub.add_parser("export")
    p.add_argument("--base-url", required=True)
    p.add_argument("--clinic", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("ceiling")
    p.add_argument("--base-url", required=True)
    p.add_argument("--records", type=Path, required=True)
    p.add_argument("--bundle-size", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="bundles (for a warm-up)")
    for peer in ("fhirpy", "fhirclient"):
        p = sub.add_parser(peer)
        p.add_argument("--base-url", required=True)
        p.add_argument("--records", type=Path, required=True)
    p = sub.add_parser("mapping")
    p.add_argument("--clinic", type=Path, required=True)
    p.add_argument("--limit", type=int, default=10**9)
    p = sub.add_parser("import")
    p.add_argument("--clinic", type=Path, required=True)
    p.add_argument("--read-only", action="store_true")
    args = parser.parse_args(argv)
    if args.scenario == "sync":
        run_sync(args.base_url, args.clinic, args.state, args.name)
    elif args.scenario == "export":
        run_export(args.base_url, args.clinic, args.out)
    elif args.scenario == "ceiling":
        run_ceiling(args.base_url, args.records, args.bundle_size, args.concurrency, args.limit)
    elif args.scenario == "fhirpy":
        run_fhirpy(args.base_url, args.records)
    elif args.scenario == "fhirclient":
        run_fhirclient(args.base_url, args.records)
    elif args.scenario == "mapping":
        run_mapping(args.clinic, args.limit)
    else:
        run_import(args.clinic, args.read_only)


if __name__ == "__main__":
    main()
