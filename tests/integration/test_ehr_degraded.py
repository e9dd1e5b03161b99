"""What the EHR will not take, degraded as configured (issue #13 items 1 and 6).

* ``restricted`` takes no Flag: the example clinic's monitor raises its alerts as Tasks only
  (each carrying the rule's code and message the Flag would have), a second run writes
  nothing, and a recovery closes them; no Flag is ever written.
* ``[write_modes] Observation = "single"`` on a server whose statement offers transactions:
  every check-in group (a response and its score) is sent as single requests, the rest
  still in transactions; every record once, a second run writes nothing; ``doctor`` says so.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.defaults import DEFAULT_NAMESPACE

from .clinickit import CountingTransport

MRN = "http://example-clinic.org/mrn"
NOW = datetime.now(UTC).replace(microsecond=0)


def _ours(full_base: str, rtype: str, kind: str) -> list[dict[str, Any]]:
    """Every resource of ``rtype`` with our identifier of ``kind``, all pages."""
    found: list[dict[str, Any]] = []
    url: str | None = f"{full_base}/{rtype}?identifier={DEFAULT_NAMESPACE}/{kind}|&_count=50"
    with httpx.Client(timeout=60, headers={"Cache-Control": "no-cache"}) as http:
        while url:
            bundle = http.get(url).raise_for_status().json()
            found.extend(e["resource"] for e in bundle.get("entry") or [])
            url = next(
                (k["url"] for k in bundle.get("link") or [] if k["relation"] == "next"), None
            )
    return found


def _patient_id(full_base: str, mrn: str) -> str:
    with httpx.Client(timeout=60) as http:
        found = http.get(f"{full_base}/Patient", params={"identifier": f"{MRN}|{mrn}"})
    [entry] = found.raise_for_status().json()["entry"]
    return str(entry["resource"]["id"])


def _new_patient(full_base: str, mrn: str) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": MRN, "value": mrn}]}
    with httpx.Client(timeout=60) as http:
        made = http.post(
            f"{full_base}/Patient", json=body, headers={"Content-Type": "application/fhir+json"}
        )
    return str(made.raise_for_status().json()["id"])


def _srs_file(tmp: Path, mrn: str, marks: list[float], *, first_week: int) -> Path:
    """Weekly SRS check-ins (week 0 is eight weeks ago), each item marked ``marks[i]``."""
    records = [
        {
            "key": f"{mrn.lower()}-srs-{first_week + i:02d}",
            "instrument": "srs",
            "authored": (NOW - timedelta(weeks=8 - first_week - i)).isoformat(),
            "answers": {q: str(mark) for q in ("q1", "q2", "q3", "q4")},
        }
        for i, mark in enumerate(marks)
    ]
    doc = {"defaults": {"patient": {"system": MRN, "value": mrn}}, "assessments": records}
    path = tmp / f"{mrn}-{first_week}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _rules_by_patient(tasks: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Alert keys (``rule:patient id``) of the Tasks, as patient id -> sorted rule ids."""
    out: dict[str, list[str]] = {}
    for task in tasks:
        rule, _, patient = task["identifier"][0]["value"].partition(":")
        out.setdefault(patient, []).append(rule)
    return {p: sorted(r) for p, r in out.items()}


def test_restricted_raises_alerts_as_tasks_only_once_and_closes_them(
    clinic: Path, fhir_base_url: str, fhir_profile_url: Any, tmp_path: Path
) -> None:
    base = fhir_profile_url("restricted")
    syn = _new_patient(fhir_base_url, "SYN-0001")
    falling = _srs_file(tmp_path, "SYN-0001", [9.6, 9.7, 9.4, 7.8], first_week=0)
    state = tmp_path / "state.sqlite3"
    transport = CountingTransport()
    with AllianceFhir(Settings(server_url=base, state_path=state), transport=transport) as api:
        doctor = api.doctor()
        assert doctor.alerts == "Task only (the server takes no Flag writes)"
        assert api.push_assessments([clinic / "clinic" / "assessments", falling]).ok
        assert api.push_goals([clinic / "goals"]).ok
        first = api.monitor()
        assert first.ok, first.failures
        transport.reset()
        second = api.monitor()
        second_writes = transport.writes
    assert first.alert_note == "Task only (the server takes no Flag writes)"
    assert first.alerts["new"] > 2
    tasks = _ours(fhir_base_url, "Task", "alert-task")
    assert len(tasks) == first.alerts["new"]
    rules = _rules_by_patient(tasks)
    assert rules[_patient_id(fhir_base_url, "MRN-1003")] == [
        "srs-below-cutoff",
        "trc-client-below-cutoff",
    ]
    assert rules[syn] == ["srs-below-cutoff", "srs-drop"]
    for task in tasks:
        assert task["status"] == "requested"
        assert task["reasonCode"]["text"] == task["description"]
        assert task["reasonCode"]["coding"] == task["code"]["coding"]
    assert second.ok, second.failures
    assert second_writes == 0
    assert second.alerts["new"] == 0
    assert second.alerts["unchanged"] == first.alerts["new"]

    better = _srs_file(tmp_path, "SYN-0001", [9.5], first_week=4)
    with AllianceFhir(Settings(server_url=base, state_path=state)) as api:
        assert api.push_assessments([better]).ok
        closed = api.monitor()
    assert closed.ok, closed.failures
    assert closed.alerts["recovered"] == 2
    tasks = _ours(fhir_base_url, "Task", "alert-task")
    assert len(tasks) == first.alerts["new"]  # closed, none added
    done = [t for t in tasks if t["identifier"][0]["value"].endswith(f":{syn}")]
    assert [t["status"] for t in done] == ["completed", "completed"]
    assert _ours(fhir_base_url, "Flag", "alert-flag") == []


class PathCounter(httpx.HTTPTransport):
    """Counts writes by the path they went to (the base for bundles, a type for singles)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method in ("POST", "PUT") and not request.url.path.endswith("/_search"):
            last = request.url.path.rstrip("/").split("/")
            where = "bundle" if last[-1] == "fhir" else last[-1 if request.method == "POST" else -2]
            with self._lock:
                self.writes[where] += 1
        return super().handle_request(request)


def test_one_type_written_singly_by_config(
    clinic: Path, fhir_base_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        server_url=fhir_base_url,
        state_path=tmp_path / "state.sqlite3",
        write_modes={"Observation": "single"},
    )
    transport = PathCounter()
    assessments = [clinic / "clinic" / "assessments" / "mrn-1001.yaml"]  # one client: quick
    with AllianceFhir(settings, transport=transport) as api:
        doctor = api.doctor()
        assert doctor.ok, doctor.blockers
        assert doctor.strategy == "transaction"
        how = {t.resource_type: t.strategy for t in doctor.types}
        assert how["Observation"] == "single + If-None-Exist (write_modes)"
        assert how["Goal"] == "transaction + If-None-Exist"
        assert api.publish(labels_only=True).ok
        transport.writes.clear()
        first = api.push_assessments(assessments)
        pushed = Counter(transport.writes)
        transport.writes.clear()
        again = api.push_assessments(assessments)
    assert first.ok
    assert first.result is not None
    assert again.result is not None
    created = first.result.counts["created"]
    responses = len(_ours(fhir_base_url, "QuestionnaireResponse", "assessment"))
    scores = len(_ours(fhir_base_url, "Observation", "score"))
    assert created == responses + scores
    # a check-in with a score goes singly (response, then score); an unscorable check-in
    # (a response alone) still goes in a transaction
    assert scores >= 5
    assert pushed["QuestionnaireResponse"] == pushed["Observation"] == scores
    assert pushed["bundle"] == (1 if responses > scores else 0)
    assert set(pushed) <= {"QuestionnaireResponse", "Observation", "bundle"}
    assert again.result.counts["created"] == again.result.counts["updated"] == 0
    assert sum(transport.writes.values()) == 0
