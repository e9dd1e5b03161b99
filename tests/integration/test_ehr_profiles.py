"""Sync against EHR-like servers (issue #13): the test server's profiles, one JVM.

For each profile the example clinic is published and pushed twice through
``/profiles/<name>/fhir``: the first run leaves every record on the server exactly once
(counted by type and by identifier, read through the unrestricted ``/fhir``), the second
writes nothing. Then, per profile, one write's answer is lost in a run that also holds an
unknown patient (reported per record, the rest goes on) and the state file is deleted
before the next run: still every record exactly once; one changed answer is one record
group's update; a Goal a clinician changed in the EHR while the clinic changed it too is a
conflict, the EHR's value kept.

``make test`` runs the profiles that differ most (batch-only, no-conditional, restricted);
``make ehr-matrix`` sets ``ALLIANCE_FHIR_EHR_PROFILES=all`` (and adds the fault subset per
profile, matrix_ehr_faults.py). A response amended in the EHR runs on ``no-etag`` (updates
without versions: read, compare, write) and ``restricted`` always, as does ``monitor`` on
``restricted`` (no ``_sort``, no ``_lastUpdated`` on responses).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from alliance_fhir.api import AllianceFhir
from alliance_fhir.app.monitor import MonitorResult
from alliance_fhir.config import Settings
from alliance_fhir.defaults import DEFAULT_NAMESPACE
from alliance_fhir.exceptions import DuplicateRecordsError

from .clinickit import CountingTransport
from .test_goal_merge_integration import GOAL, OLD_WORDS, _change_plan

ALL_PROFILES = ("full", "batch-only", "single-only", "no-conditional", "no-etag", "restricted")
SLICE = ("batch-only", "no-conditional", "restricted")
_chosen = os.environ.get("ALLIANCE_FHIR_EHR_PROFILES", ",".join(SLICE))
PROFILES = ALL_PROFILES if _chosen == "all" else tuple(p for p in _chosen.split(",") if p)
#: Profiles whose proof deletes the state file between runs in ``make test`` too (every
#: profile does in ``make ehr-matrix``): the one where a lost state is hardest.
STATE_LOSS = ALL_PROFILES if _chosen == "all" else ("no-conditional",)

#: What `doctor` says it will use, profile by profile.
STRATEGY = {
    "full": "transaction",
    "batch-only": "batch",
    "single-only": "single",
    "no-conditional": "transaction",
    "no-etag": "transaction",
    "restricted": "transaction",
}
#: Types the profile will not take: sync leaves them out instead of failing each record.
NOT_ACCEPTED = {"restricted": {"CodeSystem", "Questionnaire", "Flag"}}
OUR_TYPES = (
    "CodeSystem",
    "Questionnaire",
    "QuestionnaireResponse",
    "Observation",
    "Goal",
    "CarePlan",
)
#: The example clinic: 5 Questionnaires, 1 CodeSystem, and 194 records of check-ins and goals.
CLINIC_RECORDS = 194


def _api(base: str, state: Path, transport: httpx.BaseTransport | None = None) -> AllianceFhir:
    return AllianceFhir(Settings(server_url=base, state_path=state), transport=transport)


def _push_all(api: AllianceFhir, clinic: Path) -> Counter[str]:
    """Publish, push assessments and goals; the runs' counts added up."""
    total: Counter[str] = Counter()
    for report in (
        api.publish(labels_only=True),
        api.push_assessments([clinic / "clinic" / "assessments"]),
        api.push_goals([clinic / "goals"]),
    ):
        assert report.ok, (report.problems, report.result and report.result.failures)
        assert report.result is not None
        total.update(report.result.counts)
    return total


def _ours_on_server(full_base: str) -> dict[str, Counter[str]]:
    """Per type: how many resources hold each of our identifiers (read through /fhir)."""
    found: dict[str, Counter[str]] = {}
    with httpx.Client(timeout=120, headers={"Accept": "application/fhir+json"}) as http:
        for rtype in OUR_TYPES:
            tokens: Counter[str] = Counter()
            url: str | None = f"{full_base}/{rtype}?_count=200&_elements=identifier,url,version"
            while url:
                bundle = http.get(url).raise_for_status().json()
                for entry in bundle.get("entry") or []:
                    res = entry["resource"]
                    listed = res.get("identifier") or []
                    listed = [listed] if isinstance(listed, dict) else listed  # QR: just one
                    idents = [
                        f"{i.get('system')}|{i.get('value')}"
                        for i in listed
                        if str(i.get("system", "")).startswith(DEFAULT_NAMESPACE)
                    ]
                    if res.get("url"):
                        idents = [f"{res['url']}|{res.get('version')}"]
                    tokens.update(idents or [f"foreign:{res['id']}"])
                url = next(
                    (lk["url"] for lk in bundle.get("link") or [] if lk["relation"] == "next"), None
                )
            found[rtype] = tokens
    return found


def _assert_each_once(full_base: str, expected: dict[str, int]) -> None:
    on_server = _ours_on_server(full_base)
    counts = {t: sum(c.values()) for t, c in on_server.items() if sum(c.values())}
    assert counts == {t: n for t, n in expected.items() if n}
    twice = {t: [k for k, n in c.items() if n > 1] for t, c in on_server.items()}
    assert {t: ks for t, ks in twice.items() if ks} == {}


def _expected(api: AllianceFhir, clinic: Path, profile: str) -> dict[str, int]:
    records = api.instrument_records(labels_only=True)
    records.extend(api.assessment_records([clinic / "clinic" / "assessments"]))
    records.extend(api.goal_records([clinic / "goals"]))
    skip = NOT_ACCEPTED.get(profile, set())
    by_type = Counter(d.resource_type for d in records.desired if d.resource_type not in skip)
    assert sum(n for t, n in by_type.items() if t not in ("CodeSystem", "Questionnaire")) == (
        CLINIC_RECORDS
    )
    return {t: by_type.get(t, 0) for t in OUR_TYPES}


@pytest.mark.parametrize("profile", PROFILES)
def test_two_runs_every_record_once(
    profile: str,
    clinic: Path,
    fhir_base_url: str,
    fhir_profile_url: Any,
    tmp_path: Path,
) -> None:
    base = fhir_profile_url(profile)
    transport = CountingTransport()
    started = time.monotonic()
    with _api(base, tmp_path / "state.sqlite3", transport) as api:
        doctor = api.doctor()
        assert doctor.ok, doctor.blockers
        assert doctor.strategy == STRATEGY[profile]
        expected = _expected(api, clinic, profile)
        first = _push_all(api, clinic)
    seconds = time.monotonic() - started
    assert first["created"] == sum(expected.values()), first
    assert first["rejected"] == first["conflict"] == first["unconfirmed"] == 0
    not_accepted = NOT_ACCEPTED.get(profile, set())
    assert first["not_accepted"] == (6 if not_accepted else 0)
    _assert_each_once(fhir_base_url, expected)

    transport.reset()
    with _api(base, tmp_path / "state.sqlite3", transport) as api:
        second = _push_all(api, clinic)
    assert transport.writes == 0
    assert second["created"] == second["updated"] == 0
    assert second["unchanged"] == sum(expected.values())
    _assert_each_once(fhir_base_url, expected)
    print(f"\n{profile}: first run {seconds:.1f}s")


class LosingTransport(httpx.HTTPTransport):
    """Forwards every request; the answer to the ``nth`` write (POST/PUT) is dropped after
    the server handled it, as a connection reset mid-response would."""

    def __init__(self, nth: int) -> None:
        super().__init__()
        self.nth = nth
        self.writes = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method in ("POST", "PUT") and not request.url.path.endswith("/_search"):
            with self._lock:
                self.writes += 1
                drop = self.writes == self.nth
            if drop:
                response.read()
                response.close()
                self.dropped += 1
                raise httpx.ReadError("connection reset (injected)", request=request)
        return response


def _unknown_patient_file(clinic: Path, tmp_path: Path) -> tuple[Path, str]:
    """One check-in naming a patient the EHR does not know (MRN-9999); its key."""
    doc = yaml.safe_load((clinic / "clinic" / "assessments" / "mrn-1001.yaml").read_text())
    record = {**doc["assessments"][0], "key": "9999-s01-trc-client"}
    unknown = tmp_path / "unknown" / "mrn-9999.yaml"
    unknown.parent.mkdir()
    patient = {"system": "http://example-clinic.org/mrn", "value": "MRN-9999"}
    unknown.write_text(
        yaml.safe_dump(
            {"defaults": {**doc["defaults"], "patient": patient}, "assessments": [record]}
        )
    )
    return unknown, str(record["key"])


def _clinician_puts_goal_on_hold(full_base: str, base: str) -> None:
    """Someone in the EHR puts our sister Goal on hold (read through /fhir, written through
    the profile as the EHR's own users would)."""
    with httpx.Client(timeout=60, headers={"Cache-Control": "no-cache"}) as http:
        found = http.get(f"{full_base}/Goal", params={"identifier": GOAL}).raise_for_status()
        [entry] = found.json()["entry"]
        goal = entry["resource"]
        goal["lifecycleStatus"] = "on-hold"
        put = http.put(
            f"{base}/Goal/{goal['id']}",
            json=goal,
            headers={"Content-Type": "application/fhir+json"},
        )
    assert put.status_code == 200, put.text


@pytest.mark.parametrize("profile", PROFILES)
def test_lost_answer_lost_state_one_change_and_a_clinicians_edit(
    profile: str, clinic: Path, fhir_base_url: str, fhir_profile_url: Any, tmp_path: Path
) -> None:
    """The proof beyond two clean runs, per profile: one write's answer lost, an unknown
    patient in the input, then the state file deleted (``STATE_LOSS``); then one changed
    answer and a Goal a clinician changed in the EHR while the clinic changed it too."""
    base = fhir_profile_url(profile)
    state = tmp_path / "state.sqlite3"
    unknown, unknown_key = _unknown_patient_file(clinic, tmp_path)
    losing = LosingTransport(nth=3)
    with _api(base, state, losing) as api:
        expected = _expected(api, clinic, profile)
        api.publish(labels_only=True)
        report = api.push_assessments([clinic / "clinic" / "assessments", unknown])
        goals = api.push_goals([clinic / "goals"])
        dead = api.status().dead_letters
    assert losing.dropped == 1
    assert goals.ok
    assert report.result is not None
    assert report.result.counts["rejected"] == 2  # the unknown patient's response and score
    assert [d.key for d in dead] == [unknown_key] * 2
    assert "unknown Patient" in dead[0].reason
    _assert_each_once(fhir_base_url, expected)  # the rest went on, nothing twice

    if profile in STATE_LOSS:
        state.unlink()
        with _api(base, state, CountingTransport()) as api:
            again = _push_all(api, clinic)
        assert again["created"] == 0
        _assert_each_once(fhir_base_url, expected)

    source = clinic / "goals" / "plan-mrn-1001.yaml"
    _clinician_puts_goal_on_hold(fhir_base_url, base)
    _change_plan(source)
    key = _edit_answer(clinic, "mrn-1001", "3")
    transport = CountingTransport()
    with _api(base, state, transport) as api:
        changed = _push_assessments(api, clinic)
        answer_writes = transport.writes
        plan = api.push_goals([source])
        status = api.status()
    assert changed["updated"] == 2  # the response and its score, nothing else
    assert changed["created"] == changed["conflict"] == changed["rejected"] == 0
    assert answer_writes == (2 if profile == "single-only" else 1)
    assert _heard(_response(fhir_base_url, key)).endswith(".3")
    assert plan.result is not None
    assert plan.result.counts["conflict"] == 1
    assert plan.result.failures == ["goal/plan-1001-2024/sister: conflict (lifecycleStatus)"]
    assert [(c.kind, c.key) for c in status.conflicts] == [("goal", "plan-1001-2024/sister")]
    with httpx.Client(timeout=60) as http:
        [entry] = http.get(f"{fhir_base_url}/Goal", params={"identifier": GOAL}).json()["entry"]
    assert entry["resource"]["lifecycleStatus"] == "on-hold"  # the EHR's change survived
    assert entry["resource"]["description"]["text"] == OLD_WORDS
    _assert_each_once(fhir_base_url, expected)


def test_a_server_that_claims_conditional_create_but_ignores_it_stops_the_run(
    clinic: Path, fhir_profile_url: Any, tmp_path: Path
) -> None:
    """``conditional_create = "trust"`` on no-conditional imitates a server whose statement
    lies: with the state lost, the check after the first created bundle finds two copies."""
    base = fhir_profile_url("no-conditional")
    state = tmp_path / "state.sqlite3"
    settings = Settings(server_url=base, state_path=state, conditional_create="trust")
    with AllianceFhir(settings) as api:
        assert api.push_goals([clinic / "goals"]).ok
    state.unlink()
    with AllianceFhir(settings) as api, pytest.raises(DuplicateRecordsError) as stopped:
        api.push_goals([clinic / "goals"])
    message = str(stopped.value)
    assert message.startswith("the server holds records of ours more than once")
    assert "goal/" in message


# -- updates and conflicts where If-Match cannot help, pulls where search is limited ---------

#: Profiles whose update or pull path differs from full's; always run (``make test`` too).
UPDATE_PROFILES = ("no-etag", "restricted")
ASSESSMENT = "http://alliance-fhir.org/fhir/identifier/assessment"


def _push_assessments(api: AllianceFhir, clinic: Path) -> Counter[str]:
    report = api.push_assessments([clinic / "clinic" / "assessments"])
    assert report.result is not None
    return report.result.counts


def _edit_answer(clinic: Path, mrn: str, answer: str) -> str:
    """Change the first assessment's ``heard`` answer in the source file; its key."""
    record_file = clinic / "clinic" / "assessments" / f"{mrn}.yaml"
    doc = yaml.safe_load(record_file.read_text())
    doc["assessments"][0]["answers"]["heard"] = answer
    record_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(doc["assessments"][0]["key"])


def _response(full_base: str, key: str) -> dict[str, Any]:
    with httpx.Client(timeout=60, headers={"Accept": "application/fhir+json"}) as http:
        found = http.get(
            f"{full_base}/QuestionnaireResponse", params={"identifier": f"{ASSESSMENT}|{key}"}
        )
    entries = found.raise_for_status().json().get("entry") or []
    assert len(entries) == 1
    return dict(entries[0]["resource"])


def _heard(qr: dict[str, Any]) -> str:
    item = next(i for i in qr["item"] if i["linkId"] == "heard")
    return str(item["answer"][0]["valueCoding"]["code"])


@pytest.mark.parametrize("profile", UPDATE_PROFILES)
def test_one_changed_answer_is_one_records_update(
    profile: str, clinic: Path, fhir_base_url: str, fhir_profile_url: Any, tmp_path: Path
) -> None:
    base = fhir_profile_url(profile)
    transport = CountingTransport()
    with _api(base, tmp_path / "state.sqlite3", transport) as api:
        api.publish(labels_only=True)
        first = _push_assessments(api, clinic)
        assert first["created"] > 100
        key = _edit_answer(clinic, "mrn-1001", "3")
        transport.reset()
        changed = _push_assessments(api, clinic)
    assert changed["updated"] == 2  # the response and its score
    assert changed["created"] == changed["conflict"] == changed["rejected"] == 0
    assert changed["unchanged"] == first["created"] - 2
    assert transport.writes == 1  # one transaction carrying the changed record group
    assert _heard(_response(fhir_base_url, key)).endswith(".3")


@pytest.mark.parametrize("profile", UPDATE_PROFILES)
def test_a_record_someone_changed_is_not_overwritten(
    profile: str, clinic: Path, fhir_base_url: str, fhir_profile_url: Any, tmp_path: Path
) -> None:
    base = fhir_profile_url(profile)
    with _api(base, tmp_path / "state.sqlite3") as api:
        api.publish(labels_only=True)
        assert _push_assessments(api, clinic)["rejected"] == 0
        key = _edit_answer(clinic, "mrn-1002", "1")
        # Someone in the EHR amends the same response (through the profile: no versions).
        qr = _response(fhir_base_url, key)
        qr["status"] = "amended"
        with httpx.Client(timeout=60) as http:
            put = http.put(
                f"{base}/QuestionnaireResponse/{qr['id']}",
                json=qr,
                headers={"Content-Type": "application/fhir+json"},
            )
        assert put.status_code == 200, put.text
        report = api.push_assessments([clinic / "clinic" / "assessments"])
        assert not report.ok
        assert report.result is not None
        assert report.result.counts["conflict"] == 1
        assert report.result.counts["updated"] == 0
        again = _push_assessments(api, clinic)  # a later run leaves it alone too
        status = api.status()
    assert again["conflict"] == 1
    assert again["created"] == 0
    assert [(c.kind, c.key) for c in status.conflicts] == [("assessment", key)]
    served = _response(fhir_base_url, key)
    assert served["status"] == "amended"  # the EHR's change survived
    assert not _heard(served).endswith(".1")


class StatusTransport(CountingTransport):
    """Counts requests and remembers every answer's status code."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: Counter[int] = Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.statuses[response.status_code] += 1
        return response


def _alerts(result: MonitorResult) -> list[tuple[str, str]]:
    return sorted((p.patient_id, t.key) for p in result.patients for t in p.triggers)


def test_monitor_on_restricted_search_finds_the_alerts_full_finds(
    clinic: Path, fhir_base_url: str, fhir_profile_url: Any, tmp_path: Path
) -> None:
    """Alerts raised through /fhir, then a first monitor run through ``restricted`` (a new
    state store, so a whole pull): the same responses, triggers and open alerts, nothing
    raised twice, and no search the profile refuses (its statement says what to avoid)."""
    with _api(fhir_base_url, tmp_path / "full.sqlite3") as api:
        assert api.publish(labels_only=True).ok
        # one file, then the rest over a second later: a later pull (floored to the second)
        # leaves the first file's responses out however fast the server writes the rest
        assert api.push_assessments([clinic / "clinic" / "assessments" / "mrn-1001.yaml"]).ok
        time.sleep(1.1)
        assert api.push_assessments([clinic / "clinic" / "assessments"]).ok
        assert api.push_goals([clinic / "goals"]).ok
        full = api.monitor()
    assert full.ok, full.failures
    assert full.alerts["new"] > 0

    transport = StatusTransport()
    with _api(fhir_profile_url("restricted"), tmp_path / "r.sqlite3", transport) as api:
        restricted = api.monitor()
        assert restricted.ok, restricted.failures
        assert api.store.watermark("pull:qr") == full.watermark
        api.settings.pull_overlap_seconds = 0
        later = api.monitor()  # filtered by the local watermark
    with _api(fhir_base_url, tmp_path / "full.sqlite3") as api:
        api.settings.pull_overlap_seconds = 0
        full_later = api.monitor()  # filtered by the server (_lastUpdated=ge...)
    assert transport.statuses[400] == 0
    assert restricted.pulled == full.pulled > 50  # more than one capped page
    assert _alerts(restricted) == _alerts(full)
    assert restricted.alerts["new"] == 0
    assert restricted.alerts["unchanged"] == full.alerts["new"]
    assert later.ok, later.failures
    assert later.pulled == full_later.pulled < full.pulled
    assert _alerts(later) == _alerts(full_later) == _alerts(full)
