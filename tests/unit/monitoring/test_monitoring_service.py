"""The monitor's pull mapping, its alert writes and the report's goals, without a server.

``FakeServer`` is a tiny in-memory FHIR server: enough search (identifier tokens, subject,
status lists, questionnaire URLs), versioned updates with If-Match, and transactions with
conditional creates, to check what the monitor writes and how often.
"""

from __future__ import annotations

import copy
import html
import itertools
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from monitoringkit import default_rules

from alliance_fhir.adapters.codesystem import codesystem_for_instruments
from alliance_fhir.app.monitor import RECOVERED_REASON, Monitor
from alliance_fhir.app.reports import Reports, report_goals
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConfigError, ConflictError, InvalidInputError
from alliance_fhir.fhir import ReadResult
from alliance_fhir.goals import Plan
from alliance_fhir.instruments.library import load_library
from alliance_fhir.monitoring import rule_concepts
from alliance_fhir.monitoring.pull import (
    external_key,
    instruments_by_url,
    newest_update,
    pull_params,
    read_response,
    score_response,
    since_for,
)
from alliance_fhir.sync.state import StateStore

NS = "http://alliance-fhir.org/fhir/identifier"
SRS = "http://alliance-fhir.org/fhir/Questionnaire/srs"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


# -- a fake server -----------------------------------------------------------------------


class FakeServer:
    def __init__(self) -> None:
        self.db: dict[str, dict[str, dict[str, Any]]] = {}
        self.ids = itertools.count(1)
        self.writes: list[str] = []
        self.conflict_once: set[str] = set()

    def add(self, resource: dict[str, Any], updated: str = "2024-03-01T10:00:00.000+00:00") -> str:
        rid = str(next(self.ids))
        stored = {**copy.deepcopy(resource), "id": rid}
        stored["meta"] = {"versionId": "1", "lastUpdated": updated}
        self.db.setdefault(resource["resourceType"], {})[rid] = stored
        return rid

    def all(self, rtype: str) -> list[dict[str, Any]]:
        return list(self.db.get(rtype, {}).values())

    @staticmethod
    def _matches(res: Mapping[str, Any], params: Mapping[str, str]) -> bool:
        for name, value in params.items():
            if name.startswith("_"):
                continue
            if name == "identifier":
                system, _, val = value.partition("|")
                idents = res.get("identifier") or []
                idents = idents if isinstance(idents, list) else [idents]
                if not any(
                    i.get("system") == system and (not val or i.get("value") == val) for i in idents
                ):
                    return False
            elif name == "status":
                if res.get("status") not in value.split(","):
                    return False
            elif name in ("subject", "patient"):
                ref = (res.get("subject") or res.get("for") or {}).get("reference")
                if ref != value:
                    return False
            elif name == "questionnaire":
                url = str(res.get("questionnaire", "")).partition("|")[0]
                if url not in value.split(","):
                    return False
            else:
                raise AssertionError(f"unexpected search parameter {name}")
        return True

    def search(
        self, rtype: str, params: Mapping[str, str] | None = None, **_: Any
    ) -> Iterator[dict[str, Any]]:
        found = [r for r in self.all(rtype) if self._matches(r, params or {})]
        if (params or {}).get("_sort") == "-_lastUpdated":
            found.sort(key=lambda r: r["meta"]["lastUpdated"], reverse=True)
        yield from copy.deepcopy(found)

    def search_page(self, rtype: str, params: Mapping[str, str], **_: Any) -> dict[str, Any]:
        found = list(self.search(rtype, params))[: int(params.get("_count", "100"))]
        return {"resourceType": "Bundle", "entry": [{"resource": r} for r in found]}

    def read(self, rtype: str, rid: str, **_: Any) -> ReadResult:
        res = copy.deepcopy(self.db[rtype][rid])
        return ReadResult(res, res["meta"]["versionId"], None, None)

    def update(self, resource: Mapping[str, Any], *, if_match: str | None = None) -> None:
        rtype, rid = resource["resourceType"], resource["id"]
        current = self.db[rtype][rid]
        key = f"{rtype}/{rid}"
        if key in self.conflict_once:  # someone else wrote just before us
            self.conflict_once.discard(key)
            current["meta"]["versionId"] = str(int(current["meta"]["versionId"]) + 1)
        if if_match != current["meta"]["versionId"]:
            raise ConflictError("412 Precondition Failed", status=412)
        version = str(int(current["meta"]["versionId"]) + 1)
        stored = {**copy.deepcopy(dict(resource)), "meta": {"versionId": version}}
        stored["meta"]["lastUpdated"] = "2024-03-01T12:00:00.000+00:00"
        self.db[rtype][rid] = stored
        self.writes.append(f"PUT {key}")

    def transaction(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        for entry in bundle["entry"]:
            req = entry["request"]
            query = dict(p.split("=", 1) for p in req["ifNoneExist"].split("&"))
            if list(self.search(req["url"], query)):
                continue
            self.add(entry["resource"])
            self.writes.append(f"POST {req['url']}")
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": []}


def _qr(
    patient: str, authored: datetime, marks: list[float | None], key: str | None
) -> dict[str, Any]:
    qr: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": f"{SRS}|1.0.0",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient}"},
        "authored": authored.isoformat(),
        "item": [
            {"linkId": f"q{i + 1}", "answer": [{"valueDecimal": m}]}
            for i, m in enumerate(marks)
            if m is not None
        ],
    }
    if key:
        qr["identifier"] = {"system": f"{NS}/assessment", "value": key}
    return qr


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def monitor(server: FakeServer, tmp_path: Path) -> Iterator[Monitor]:
    settings = Settings(server_url="http://fhir.test/fhir", state_path=tmp_path / "s.sqlite3")
    with StateStore(settings.state_path) as store:
        yield Monitor(
            cast(Any, server),
            store,
            load_library(),
            settings,
            list(default_rules()),
            now=lambda: NOW,
        )


def _falling(server: FakeServer, patient: str = "p1") -> list[str]:
    marks = [9.6, 9.7, 9.4, 7.8]
    return [
        server.add(_qr(patient, NOW - timedelta(weeks=4 - i), [m] * 4, f"k{i}"))
        for i, m in enumerate(marks)
    ]


# -- pull mapping ------------------------------------------------------------------------


def test_ours_and_external_responses_are_told_apart_and_others_ignored() -> None:
    by_url = instruments_by_url(load_library().all())
    ours = read_response({**_qr("7", NOW, [9.0] * 4, "a-1"), "id": "41"}, by_url)
    theirs = read_response({**_qr("7", NOW, [9.0] * 4, None), "id": "42"}, by_url)
    assert ours is not None
    assert theirs is not None
    assert (ours.key, ours.ours, ours.patient_id) == ("a-1", True, "7")
    assert (theirs.key, theirs.ours) == ("ext-42", False)
    other = {**_qr("7", NOW, [9.0] * 4, None), "id": "43", "questionnaire": "http://x/Q/1"}
    assert read_response(other, by_url) is None
    unfinished = {**_qr("7", NOW, [9.0] * 4, None), "id": "44", "status": "in-progress"}
    assert read_response(unfinished, by_url) is None


def test_an_unreadable_response_names_itself_and_not_its_content() -> None:
    by_url = instruments_by_url(load_library().all())
    qr = {**_qr("7", NOW, [9.0] * 4, None), "id": "45"}
    qr["subject"] = {"display": "Giulia Marchetti"}
    with pytest.raises(InvalidInputError) as err:
        read_response(qr, by_url)
    assert str(err.value.problems[0]).startswith("QuestionnaireResponse/45 [subject]")
    assert "Giulia" not in str(err.value.problems[0])


def test_a_missing_item_makes_an_unscorable_checkin_with_a_phi_free_reason() -> None:
    by_url = instruments_by_url(load_library().all())
    resp = read_response({**_qr("7", NOW, [1.3, 1.7, None, 1.1], None), "id": "46"}, by_url)
    assert resp is not None
    scored = score_response(resp, observation=True)
    assert not scored.checkin.scorable
    assert scored.observation is None
    assert scored.reason is not None
    assert "answers.q3: required item not answered" in scored.reason
    assert "1.3" not in scored.reason


def test_an_external_response_gets_an_observation_keyed_by_its_server_id() -> None:
    by_url = instruments_by_url(load_library().all())
    resp = read_response({**_qr("7", NOW, [9.0, 8.5, 9.5, 9.0], None), "id": "47"}, by_url)
    assert resp is not None
    obs = score_response(resp, observation=True).observation
    assert obs is not None
    assert obs["identifier"][0] == {"use": "official", "system": f"{NS}/score", "value": "ext-47"}
    assert obs["derivedFrom"][0]["reference"] == "QuestionnaireResponse/47"
    assert obs["subject"]["reference"] == "Patient/7"
    assert obs["valueQuantity"]["value"] == 36
    assert external_key("x" * 64).startswith("ext-")
    assert len(external_key("x" * 64)) <= 64


def test_a_withdrawn_response_gives_its_observation_entered_in_error() -> None:
    by_url = instruments_by_url(load_library().all())
    qr = {**_qr("7", NOW, [9.0, 8.5, 9.5, 9.0], None), "id": "48", "status": "entered-in-error"}
    assert read_response(qr, by_url) is None
    resp = read_response(qr, by_url, withdrawn=True)
    assert resp is not None
    assert resp.withdrawn
    obs = score_response(resp, observation=True).observation
    assert obs is not None
    assert obs["status"] == "entered-in-error"
    assert obs["identifier"][0]["value"] == "ext-48"


def test_watermark_overlap_and_pull_parameters() -> None:
    assert since_for(None, 300) is None
    assert since_for("2024-03-01T10:05:00.250+00:00", 300) == "2024-03-01T10:00:00Z"
    params = pull_params([SRS, "http://x/Q/2"], "2024-03-01T10:00:00Z")
    assert params == {
        "questionnaire": f"{SRS},http://x/Q/2",
        "_sort": "_lastUpdated",
        "_count": "100",
        "_lastUpdated": "ge2024-03-01T10:00:00Z",
    }
    metas = [
        {"meta": {"lastUpdated": t}} for t in ("2024-03-01T10:00:00Z", "2024-03-02T09:00:00+01:00")
    ]
    assert newest_update(metas, "2024-02-01T00:00:00Z") == "2024-03-02T09:00:00+01:00"


# -- alerts --------------------------------------------------------------------------------


def test_a_run_raises_each_alert_once_and_advances_the_watermark(
    server: FakeServer, monitor: Monitor
) -> None:
    _falling(server)
    first = monitor.run()
    second = monitor.run()
    assert first.alerts["new"] == 2
    assert second.alerts == {"unchanged": 2}
    assert len(server.all("Flag")) == 2
    assert len(server.all("Task")) == 2
    assert monitor.store.watermark("pull:qr") == "2024-03-01T10:00:00.000+00:00"


def test_changed_numbers_update_the_open_task_under_if_match_retrying_a_conflict(
    server: FakeServer, monitor: Monitor
) -> None:
    _falling(server)
    monitor.run()
    server.add(_qr("p1", NOW - timedelta(days=1), [5.0] * 4, "k9"))
    task = next(t for t in server.all("Task") if "srs-drop" in t["identifier"][0]["value"])
    server.conflict_once.add(f"Task/{task['id']}")

    result = monitor.run()

    assert result.alerts["changed"] == 2
    assert len(server.all("Task")) == 2
    updated = server.db["Task"][task["id"]]
    assert "from 31.2 to 20" in updated["description"]
    assert updated["status"] == "requested"


def test_an_alert_the_clinician_closed_is_not_raised_again_for_the_same_checkin(
    server: FakeServer, monitor: Monitor
) -> None:
    _falling(server)
    monitor.run()
    for task in server.db["Task"].values():
        task["status"] = "cancelled"  # the clinician dealt with it
    for flag in server.db["Flag"].values():
        flag["status"] = "inactive"

    again = monitor.run()
    assert again.alerts == {"dismissed": 2}
    assert len(server.all("Task")) == 2

    server.add(_qr("p1", NOW - timedelta(days=1), [5.0] * 4, "k9"))  # a new fall
    fresh = monitor.run()
    assert fresh.alerts["new"] == 2
    assert len(server.all("Flag")) == 2  # reopened, not duplicated
    assert sorted(t["status"] for t in server.all("Task")) == [
        "cancelled",
        "cancelled",
        "requested",
        "requested",
    ]


def test_recovery_closes_flag_and_task_with_our_reason(
    server: FakeServer, monitor: Monitor
) -> None:
    _falling(server)
    monitor.run()
    server.add(_qr("p1", NOW - timedelta(days=1), [9.5] * 4, "k9"))
    result = monitor.run()
    assert result.alerts["recovered"] == 2
    assert {f["status"] for f in server.all("Flag")} == {"inactive"}
    for task in server.all("Task"):
        assert task["status"] == "completed"
        assert task["statusReason"]["text"] == RECOVERED_REASON
        assert task["note"][-1]["text"].startswith("Scores recovered:")


def test_a_withdrawn_checkin_closes_its_alerts_saying_so(
    server: FakeServer, monitor: Monitor
) -> None:
    ids = _falling(server)
    monitor.run()
    server.db["QuestionnaireResponse"][ids[-1]]["status"] = "entered-in-error"
    result = monitor.run(all_patients=True)
    assert result.alerts["recovered"] == 2
    assert result.pulled == 3
    for task in server.all("Task"):
        assert task["status"] == "completed"
        assert task["statusReason"]["text"] == RECOVERED_REASON
        note = task["note"][-1]["text"]
        assert f"(QuestionnaireResponse/{ids[-1]}) was withdrawn" in note
        assert not note.startswith("Scores recovered")


def test_a_task_with_our_identifier_system_and_a_foreign_value_is_a_problem(
    server: FakeServer, monitor: Monitor
) -> None:
    _falling(server)
    odd = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "identifier": [{"system": f"{NS}/alert-task", "value": "EHR task 12"}],
        "description": 42,
    }
    task_id = server.add(odd)
    result = monitor.run()
    assert result.alerts["new"] == 2
    assert [(p.location, p.path) for p in monitor.alerts.problems] == [
        (f"Task/{task_id}", "Task.identifier")
    ]


def test_a_failed_patient_keeps_the_watermark_where_it_was(
    server: FakeServer, monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    _falling(server)

    def broken(bundle: Mapping[str, Any]) -> dict[str, Any]:
        raise ConflictError("boom", status=409)

    monkeypatch.setattr(server, "transaction", broken)
    result = monitor.run()
    assert not result.ok
    assert result.failures == ["Patient/p1: ConflictError"]
    assert monitor.store.watermark("pull:qr") is None


# -- report goals and the CodeSystem -------------------------------------------------------


def test_the_report_shows_the_open_alerts_and_trend_of_a_patient_found_by_identifier(
    server: FakeServer, monitor: Monitor, tmp_path: Path
) -> None:
    _falling(server)
    monitor.run()
    mrn = "http://example-clinic.org/mrn|MRN-9"
    server.db.setdefault("Patient", {})["p1"] = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "http://example-clinic.org/mrn", "value": "MRN-9"}],
    }
    reports = Reports(
        cast(Any, server), monitor.library, monitor.settings, monitor.rules, now=lambda: NOW
    )
    out = tmp_path / "r" / "p1.html"

    assert reports.write_report(mrn, out) == [out]

    page = out.read_text(encoding="utf-8")
    assert page == reports.report_html("Patient/p1")
    assert "Therapeutic alliance report: Client p1" in page
    assert "as of 2024-03-01" in page
    assert page.count("<svg") == 1  # one instrument answered: one chart
    open_tasks = [t["description"] for t in server.all("Task")]
    assert len(open_tasks) == 2
    assert all(html.escape(d, quote=False) in page for d in open_tasks)
    assert "MRN-9" not in page


def test_an_unknown_patient_identifier_is_one_input_problem(
    server: FakeServer, monitor: Monitor
) -> None:
    reports = Reports(cast(Any, server), monitor.library, monitor.settings, monitor.rules)
    with pytest.raises(InvalidInputError, match="no such patient"):
        reports.report_html("http://example-clinic.org/mrn|MRN-404")


def test_report_goals_show_current_plans_in_the_clients_words() -> None:
    plan = Plan.model_validate(
        {
            "key": "plan-1",
            "patient": "http://example-clinic.org/mrn|X",
            "clinicians": ["http://hl7.org/fhir/sid/us-npi|1"],
            "status": "active",
            "goals": [
                {
                    "key": "g1",
                    "client_words": "Sleep through the night.",
                    "lifecycle_status": "active",
                    "achievement_status": "improving",
                    "agreement": {
                        "client": {"status": "agree"},
                        "clinician": {"status": "pending"},
                    },
                    "milestones": [
                        {
                            "key": "g1-1",
                            "client_words": "No screens after ten.",
                            "lifecycle_status": "completed",
                            "achievement_status": "achieved",
                            "targets": [{"due": "2024-02-01"}],
                        }
                    ],
                },
                {"key": "g2", "client_words": "Oops.", "lifecycle_status": "entered-in-error"},
            ],
        }
    )
    old = plan.model_copy(update={"key": "plan-0", "status": "completed"})
    goals = report_goals([old, plan])
    assert [g.description for g in goals] == ["Sleep through the night."]
    goal = goals[0]
    assert (goal.status, goal.achievement) == ("active", "improving")
    assert (goal.client_agreement, goal.clinician_agreement) == ("agree", "pending")
    assert [(m.description, m.status, m.due) for m in goal.milestones] == [
        ("No screens after ten.", "achieved", date(2024, 2, 1))
    ]


def test_codesystem_lists_rule_codes_only_when_asked() -> None:
    instruments = load_library().all()
    plain = codesystem_for_instruments(instruments)
    assert codesystem_for_instruments(instruments, extra_concepts=()) == plain
    extra = rule_concepts(default_rules())
    with_rules = codesystem_for_instruments(instruments, extra_concepts=extra)
    assert with_rules["concept"][: len(plain["concept"])] == plain["concept"]
    assert with_rules["concept"][len(plain["concept"]) :] == extra
    assert with_rules["count"] == len(plain["concept"]) + len(extra)
    clash = [{**extra[0], "code": plain["concept"][0]["code"]}]
    with pytest.raises(ConfigError):
        codesystem_for_instruments(instruments, extra_concepts=clash)
