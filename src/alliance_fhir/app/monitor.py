"""The monitor: pull new check-ins, score what was completed elsewhere, evaluate the rules,
raise and close alerts on the server; and the clinician's report of one client.

One :meth:`Monitor.run` (the CLI's ``alliance-fhir monitor``):

1. **Pull** the QuestionnaireResponses of our instruments changed since the watermark
   (``pull:qr`` in the state store, minus ``pull_overlap_seconds``), oldest first, every page,
   with ``Cache-Control: no-cache``. A response completed elsewhere (no identifier of ours)
   gets its score Observation (key ``ext-<server id>``, ``derivedFrom`` the response) through
   the sync engine: conditional, tracked in the state store, never duplicated. Ours already
   have theirs (pushed with them). Unscorable responses are logged with their id, key and
   reason only.
2. **Evaluate** every patient touched by the pull, every patient with an open alert and every
   patient with an active care plan of ours (so a *missed* check-in is noticed although
   nothing new arrived); ``all_patients`` adds everyone with a response. For each, all of
   their responses (not only the new ones) become per-instrument series for
   ``evaluate.evaluate``; ``alerts.decide_alerts`` compares the triggers with the alerts
   open on the server (our ``alert-flag``/``alert-task`` identifiers).
3. **Alerts**: ``new`` -> Flag (active) + Task (requested) in one transaction, each created
   only if no *open* one with its identifier exists; ``changed`` -> the open Flag's text
   and Task's description/focus/priority patched under If-Match; ``recovered`` -> Flag
   inactive with ``period.end``, Task completed with the recovery note (and
   ``statusReason`` :data:`RECOVERED_REASON`). A rule that fires again after recovering
   reopens its Flag (one Flag per alert key: R4 Flag has no ``status`` search parameter) and
   opens a new Task (the completed one stays as history). An alert the clinician closed by
   hand is not raised again for the same check-in (a new check-in that fires the rule
   raises it again).
4. The watermark advances (to the newest ``meta.lastUpdated`` the server sent, its clock)
   only when the run had no failures, so a failed run is simply repeated.

Nothing here prints; the PHI rules of ``alliance_fhir.log`` apply to every log line.
"""

from __future__ import annotations

import copy
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.goals import KIND_PLAN, GoalOptions, plan_from_fhir
from alliance_fhir.adapters.identity import identifier_system, search_token
from alliance_fhir.adapters.record import Desired, record_uuid
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import (
    AllianceFhirError,
    ConflictError,
    InvalidInputError,
    Problem,
)
from alliance_fhir.fhir import FhirClient
from alliance_fhir.goals import Plan
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.log import get_logger, register_sensitive
from alliance_fhir.monitoring.alerts import (
    FLAG_KIND,
    PRIORITY,
    TASK_KIND,
    AlertDecision,
    AlertState,
    OpenAlert,
    closed_flag,
    completed_task,
    decide_alerts,
    flag_resource,
    task_resource,
)
from alliance_fhir.monitoring.evaluate import CheckIn, Trigger, evaluate, recovery_note
from alliance_fhir.monitoring.pull import (
    NO_CACHE,
    WATERMARK,
    ServerResponse,
    instruments_by_url,
    newest_update,
    patient_id_of,
    pull_params,
    questionnaire_urls,
    read_response,
    score_response,
    since_for,
)
from alliance_fhir.monitoring.report import (
    ReportGoal,
    ReportMilestone,
    render_png,
    render_report_html,
    series_for,
)
from alliance_fhir.monitoring.rules import Rule, load_rules
from alliance_fhir.sync.engine import SyncEngine, SyncResult
from alliance_fhir.sync.state import StateStore

__all__ = [
    "OPEN_TASK_STATUSES",
    "RECOVERED_REASON",
    "Monitor",
    "MonitorResult",
    "PatientOutcome",
    "report_goals",
]

log = get_logger("alliance_fhir.monitoring")

#: Task statuses that mean the clinician still has it to do.
OPEN_TASK_STATUSES = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")

#: ``Task.statusReason.text`` of a Task we completed because the scores recovered (a Task
#: closed without it was closed by a person: not raised again for the same check-in).
RECOVERED_REASON = "Closed by alliance-fhir: the rule no longer applies."

_SEVERITY_OF_PRIORITY = {v: k for k, v in PRIORITY.items()}
_PLAN_STATUSES_SHOWN = ("active", "on-hold", "draft", "unknown")
_GOALS_HIDDEN = ("entered-in-error", "rejected")


@dataclass
class PatientOutcome:
    """What one patient's evaluation decided (``patient_id`` is the server's Patient id)."""

    patient_id: str
    triggers: list[Trigger] = field(default_factory=list)
    decisions: list[AlertDecision] = field(default_factory=list)


@dataclass
class MonitorResult:
    """What a monitor run did. ``alerts`` counts decisions (``new``, ``changed``,
    ``unchanged``, ``recovered``) and ``dismissed`` (closed by the clinician, not re-raised).
    ``not_scored`` lists ``QuestionnaireResponse/<id> (<key>): <reason>`` lines (no PHI)."""

    pulled: int = 0
    external: int = 0
    not_scored: list[str] = field(default_factory=list)
    patients: list[PatientOutcome] = field(default_factory=list)
    alerts: Counter[str] = field(default_factory=Counter)
    sync: SyncResult | None = None
    watermark: str | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and (self.sync is None or self.sync.ok)


@dataclass
class _Open:
    """An alert open on the server: the decision's view plus the resources to edit."""

    alert: OpenAlert
    flag: dict[str, Any] | None = None
    task: dict[str, Any] | None = None


@dataclass
class _Patient:
    """Everything one patient's evaluation reads from the server."""

    patient_id: str
    responses: list[ServerResponse]
    series: dict[str, list[CheckIn]]
    care_plan_active: bool
    care_plan_start: datetime | None
    plan_owner: dict[str, Any] | None


def _parse_when(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        if "T" not in text:
            return datetime.combine(date.fromisoformat(text[:10]), time(), tzinfo=UTC)
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _identifier_value(resource: Mapping[str, Any], system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _editable(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in resource.items() if k not in ("meta", "text")}


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_goals(plans: Iterable[Plan]) -> list[ReportGoal]:
    """The goals a report shows: those of current plans (active, on hold, draft; all plans
    when none is current), in the client's words, with agreement and milestones."""
    plan_list = list(plans)
    current = [p for p in plan_list if str(p.status) in _PLAN_STATUSES_SHOWN] or plan_list
    out: list[ReportGoal] = []
    for plan in current:
        for goal in plan.goals:
            if str(goal.lifecycle_status) in _GOALS_HIDDEN:
                continue
            agreement = goal.agreement
            milestones = [
                ReportMilestone(
                    description=m.client_words,
                    status=str(m.achievement_status or m.lifecycle_status),
                    due=min((t.due for t in m.targets if t.due is not None), default=None),
                )
                for m in goal.milestones
                if str(m.lifecycle_status) not in _GOALS_HIDDEN
            ]
            out.append(
                ReportGoal(
                    description=goal.client_words,
                    status=str(goal.lifecycle_status),
                    client_agreement=(
                        str(agreement.client.status) if agreement and agreement.client else None
                    ),
                    clinician_agreement=(
                        str(agreement.clinician.status)
                        if agreement and agreement.clinician
                        else None
                    ),
                    milestones=milestones,
                    achievement=str(goal.achievement_status) if goal.achievement_status else None,
                )
            )
    return out


class Monitor:
    """Pull, score, evaluate, alert (:meth:`run`) and report (:meth:`report_html`).

    Built from an :class:`~alliance_fhir.api.AllianceFhir` (:meth:`from_api`) or from its
    parts. ``rules`` default to the bundled ones plus ``settings.mappings_dir``'s. ``now``
    gives the evaluation time (tests pin it). ``expected_instruments`` are evaluated for a
    patient with an active care plan even before their first response to it (so "no check-in
    yet" can raise a missed-check-in alert); other instruments only once the patient has
    answered them.
    """

    def __init__(
        self,
        client: FhirClient,
        store: StateStore,
        library: InstrumentLibrary,
        settings: Settings,
        rules: Sequence[Rule] | None = None,
        *,
        engine: Callable[[], SyncEngine] | None = None,
        now: Callable[[], datetime] | None = None,
        expected_instruments: Collection[str] = (),
    ) -> None:
        self.client = client
        self.store = store
        self.library = library
        self.settings = settings
        if rules is None:
            extra = [settings.mappings_dir] if settings.mappings_dir else []
            rules = load_rules(library.all(), extra)
        self.rules = list(rules)
        self._engine = engine
        self._now = now or (lambda: datetime.now(UTC))
        self.expected_instruments = frozenset(expected_instruments)
        ns = settings.identifier_namespace
        self._ns = ns
        self._base = settings.canonical_base
        self._by_url = instruments_by_url(library.all(), self._base)
        self._urls = questionnaire_urls(library.all(), self._base)
        self._flag_system = identifier_system(FLAG_KIND, ns)
        self._task_system = identifier_system(TASK_KIND, ns)
        self._plan_system = identifier_system(KIND_PLAN, ns)
        self._rules_by_id = {r.id: r for r in self.rules}

    @classmethod
    def from_api(cls, api: Any, rules: Sequence[Rule] | None = None, **kwargs: Any) -> Monitor:
        """A monitor on an ``AllianceFhir``'s client, state store, instruments and engine."""
        return cls(
            api.client, api.store, api.library, api.settings, rules, engine=api.engine, **kwargs
        )

    # -- the run ---------------------------------------------------------------------------

    def run(self, *, all_patients: bool = False) -> MonitorResult:
        """Pull, score, evaluate and alert (see the module docstring)."""
        now = self._now()
        result = MonitorResult()
        previous = self.store.watermark(WATERMARK)
        since = None if all_patients else since_for(previous, self.settings.pull_overlap_seconds)
        raw = list(
            self.client.search(
                "QuestionnaireResponse", pull_params(self._urls, since), headers=NO_CACHE
            )
        )
        responses = self._read_all(raw, result)
        result.pulled = len(responses)
        self._score_external(responses, result)

        open_alerts = self.open_alerts()
        patients = {r.patient_id for r in responses} | set(open_alerts)
        patients |= self._active_plan_patients()
        for patient_id in sorted(patients):
            try:
                outcome = self.evaluate_patient(
                    patient_id, open_alerts.get(patient_id, []), now=now, result=result
                )
            except AllianceFhirError as exc:
                log.error("monitor.patient_failed", patient=patient_id, error=exc)
                result.failures.append(f"Patient/{patient_id}: {type(exc).__name__}")
                continue
            result.patients.append(outcome)

        newest = newest_update(raw, previous)
        if result.ok and newest is not None:
            self.store.set_watermark(WATERMARK, newest)
        result.watermark = self.store.watermark(WATERMARK)
        log.info(
            "monitor.done",
            pulled=result.pulled,
            external=result.external,
            not_scored=len(result.not_scored),
            patients=len(result.patients),
            failures=len(result.failures),
            **{f"alerts_{k}": v for k, v in sorted(result.alerts.items())},
        )
        return result

    def _read_all(
        self, raw: Iterable[Mapping[str, Any]], result: MonitorResult | None
    ) -> list[ServerResponse]:
        out: list[ServerResponse] = []
        for qr in raw:
            try:
                resp = read_response(qr, self._by_url, namespace=self._ns)
            except InvalidInputError as exc:
                problem = exc.problems[0]
                reason = f"{problem.field}: {problem.reason}"
                log.warning(
                    "monitoring.response_unreadable", response=problem.location, reason=reason
                )
                if result is not None:
                    result.not_scored.append(f"{problem.location}: {reason}")
                continue
            if resp is not None:
                out.append(resp)
        return out

    def _score_external(self, responses: Sequence[ServerResponse], result: MonitorResult) -> None:
        """Score Observations for responses completed elsewhere, through the sync engine."""
        desired: list[Desired] = []
        for resp in responses:
            scored = score_response(
                resp,
                observation=not resp.ours,
                canonical_base=self._base,
                namespace=self._ns,
            )
            if scored.reason is not None:
                log.warning(
                    "monitoring.response_not_scored",
                    response=resp.reference,
                    assessment=resp.key,
                    instrument=resp.instrument.id,
                    reason=scored.reason,
                )
                result.not_scored.append(f"{resp.reference} ({resp.key}): {scored.reason}")
                continue
            if resp.ours or scored.observation is None:
                continue
            result.external += 1
            desired.append(
                Desired.identified(
                    "score",
                    resp.key,
                    scored.observation,
                    namespace=self._ns,
                    group=f"assessment:{resp.key}",
                )
            )
        if desired:
            engine = self._engine() if self._engine is not None else self._default_engine()
            result.sync = engine.run(desired, command="monitor")

    def _default_engine(self) -> SyncEngine:
        s = self.settings
        return SyncEngine(
            self.client,
            self.store,
            bundle_size=s.bundle_size,
            concurrency=s.concurrency,
            conflict_policy=s.conflict_policy,
        )

    # -- reading a patient -----------------------------------------------------------------

    def _responses(self, patient_id: str) -> list[ServerResponse]:
        params = {
            "subject": f"Patient/{patient_id}",
            "questionnaire": ",".join(self._urls),
            "_count": "100",
        }
        raw = self.client.search("QuestionnaireResponse", params, headers=NO_CACHE)
        return self._read_all(raw, None)

    def _careplans(self, patient_id: str) -> list[dict[str, Any]]:
        params = {"subject": f"Patient/{patient_id}", "_count": "100"}
        return list(self.client.search("CarePlan", params, headers=NO_CACHE))

    def _active_plan_patients(self) -> set[str]:
        params = {"identifier": f"{self._plan_system}|", "status": "active", "_count": "100"}
        found = self.client.search("CarePlan", params, headers=NO_CACHE)
        return {pid for cp in found if (pid := patient_id_of(cp.get("subject")))}

    def _patient(self, patient_id: str, as_of: datetime) -> _Patient:
        responses = self._responses(patient_id)
        series: dict[str, list[CheckIn]] = defaultdict(list)
        for resp in responses:
            series[resp.instrument.id].append(score_response(resp).checkin)
        active = False
        start: datetime | None = None
        owners: list[tuple[bool, str]] = []
        for cp in self._careplans(patient_id):
            if _identifier_value(cp, self._plan_system) is None:
                continue
            author = cp.get("author")
            ref = str(author.get("reference") or "") if isinstance(author, Mapping) else ""
            if ref.startswith(("Practitioner/", "PractitionerRole/")):
                owners.append((cp.get("status") != "active", ref))
            if cp.get("status") != "active":
                continue
            period = cp.get("period") or {}
            end = _parse_when(period.get("end"))
            if end is not None and end.date() < as_of.date():
                continue
            active = True
            begun = _parse_when(period.get("start"))
            if begun is not None and (start is None or begun < start):
                start = begun
        # the clinician of the patient's plan (an active one first) owns its alerts
        owner = {"reference": min(owners)[1]} if owners else None
        return _Patient(patient_id, responses, dict(series), active, start, owner)

    def open_alerts(self, patient_id: str | None = None) -> dict[str, list[_Open]]:
        """Alerts open on the server (active Flag or open Task of ours), by patient id."""
        found: dict[str, _Open] = {}
        subject = {"subject": f"Patient/{patient_id}"} if patient_id else {}
        # Flag has no ``status`` search parameter in R4: one Flag per alert key (it is reopened
        # when the rule fires again), so filtering here stays cheap.
        flags = self.client.search(
            "Flag", {"identifier": f"{self._flag_system}|", **subject}, headers=NO_CACHE
        )
        for flag in flags:
            key = _identifier_value(flag, self._flag_system)
            if key and flag.get("status") == "active":
                entry = found.setdefault(key, _Open(OpenAlert("", "")))
                entry.flag = entry.flag or flag
        task_subject = {"subject": f"Patient/{patient_id}"} if patient_id else {}
        tasks = self.client.search(
            "Task",
            {
                "identifier": f"{self._task_system}|",
                "status": ",".join(OPEN_TASK_STATUSES),
                **task_subject,
            },
            headers=NO_CACHE,
        )
        for task in tasks:
            key = _identifier_value(task, self._task_system)
            if not key:
                continue
            entry = found.setdefault(key, _Open(OpenAlert("", "")))
            entry.task = entry.task or task
        out: dict[str, list[_Open]] = defaultdict(list)
        for key, entry in sorted(found.items()):
            rule_id, sep, pid = key.partition(":")
            if not sep or not pid:
                continue
            open_flag, open_task = entry.flag or {}, entry.task or {}
            description = open_task.get("description") or (open_flag.get("code") or {}).get("text")
            since = _parse_when((open_flag.get("period") or {}).get("start")) or _parse_when(
                open_task.get("authoredOn")
            )
            entry.alert = OpenAlert(
                rule_id=rule_id,
                patient_key=pid,
                flag_id=str(open_flag["id"]) if open_flag else None,
                task_id=str(open_task["id"]) if open_task else None,
                description=str(description) if description else None,
                since=since,
            )
            out[pid].append(entry)
        return dict(out)

    # -- evaluating ------------------------------------------------------------------------

    def evaluate_patient(
        self,
        patient_id: str,
        open_alerts: Sequence[_Open] | None = None,
        *,
        now: datetime | None = None,
        result: MonitorResult | None = None,
    ) -> PatientOutcome:
        """Evaluate one patient (server id) and write the alert decisions."""
        as_of = now or self._now()
        if open_alerts is None:
            open_alerts = self.open_alerts(patient_id).get(patient_id, [])
        info = self._patient(patient_id, as_of)
        evaluated = set(info.series)
        if info.care_plan_active:
            evaluated |= self.expected_instruments & {i.id for i in self.library.all()}
        outcome = PatientOutcome(patient_id)
        for instrument_id in sorted(evaluated):
            instrument = self.library.get(instrument_id)
            outcome.triggers.extend(
                evaluate(
                    self.rules,
                    instrument,
                    info.series.get(instrument_id, []),
                    patient_key=patient_id,
                    care_plan_active=info.care_plan_active,
                    as_of=as_of,
                    care_plan_start=info.care_plan_start,
                )
            )
        rule_ids = {r.id for r in self.rules if r.instrument in evaluated}
        opened = {o.alert.key: o for o in open_alerts}
        outcome.decisions = decide_alerts(
            outcome.triggers,
            [o.alert for o in open_alerts],
            patients={patient_id},
            rule_ids=rule_ids,
        )
        counts = result.alerts if result is not None else Counter[str]()
        for decision in outcome.decisions:
            state = self._apply(decision, opened.get(decision.key), info, as_of)
            counts[state] += 1
        return outcome

    # -- writing alerts --------------------------------------------------------------------

    def _apply(
        self, decision: AlertDecision, current: _Open | None, info: _Patient, now: datetime
    ) -> str:
        if decision.state == AlertState.UNCHANGED:
            return "unchanged"
        if decision.state == AlertState.NEW:
            assert decision.trigger is not None
            return self._raise(decision.trigger, info, now)
        assert current is not None
        if decision.state == AlertState.CHANGED:
            assert decision.trigger is not None
            self._change(decision.trigger, current, info, now)
            return "changed"
        self._recover(current, info, now)
        return "recovered"

    def _focus(self, trigger: Trigger, info: _Patient) -> ServerResponse | None:
        if trigger.focus_key is None:
            return None
        return next((r for r in info.responses if r.key == trigger.focus_key), None)

    def _owner(self, focus: ServerResponse | None, info: _Patient) -> dict[str, Any] | None:
        if focus is not None and focus.author_ref is not None:
            return {"reference": str(focus.author_ref["reference"])}
        return info.plan_owner

    def _dismissed(self, trigger: Trigger, focus: ServerResponse | None, info: _Patient) -> bool:
        """Whether the clinician closed this alert by hand and nothing new fired it since."""
        token = search_token(TASK_KIND, trigger.key, self._ns)
        params = {"identifier": token, "_sort": "-_lastUpdated", "_count": "1"}
        page = self.client.search_page("Task", params, headers=NO_CACHE)
        latest = next(
            (e["resource"] for e in page.get("entry") or [] if isinstance(e.get("resource"), dict)),
            None,
        )
        if latest is None or latest.get("status") in OPEN_TASK_STATUSES:
            return False
        if (latest.get("statusReason") or {}).get("text") == RECOVERED_REASON:
            return False
        if focus is not None:
            return (latest.get("focus") or {}).get("reference") == focus.reference
        closed = _parse_when((latest.get("meta") or {}).get("lastUpdated"))
        checkins = info.series.get(trigger.instrument, [])
        last = max((c.authored for c in checkins), default=None)
        return closed is not None and (last is None or last <= closed)

    def _raise(self, trigger: Trigger, info: _Patient, now: datetime) -> str:
        focus = self._focus(trigger, info)
        if self._dismissed(trigger, focus, info):
            log.info("monitoring.alert_dismissed", alert=trigger.key)
            return "dismissed"
        subject = {"reference": f"Patient/{info.patient_id}"}
        focus_ref = {"reference": focus.reference} if focus is not None else None
        flag = flag_resource(
            trigger, subject_ref=subject, namespace=self._ns, canonical_base=self._base, now=now
        )
        task = task_resource(
            trigger,
            subject_ref=subject,
            owner_ref=self._owner(focus, info),
            focus_ref=focus_ref,
            namespace=self._ns,
            canonical_base=self._base,
            now=now,
        )
        flag_token = search_token(FLAG_KIND, trigger.key, self._ns)
        task_token = search_token(TASK_KIND, trigger.key, self._ns)
        open_tasks = ",".join(OPEN_TASK_STATUSES)
        entries: list[dict[str, Any]] = []
        earlier = list(self.client.search("Flag", {"identifier": flag_token}, headers=NO_CACHE))
        if earlier:
            # The rule fired before and recovered: reopen its Flag (the last episode stays
            # in the Flag's history) rather than a second Flag with the same identifier.
            def reopen(old: dict[str, Any]) -> dict[str, Any]:
                return {**flag, "id": old["id"]}

            self._write("Flag", str(earlier[0]["id"]), reopen)
        else:
            entries.append(
                {
                    "fullUrl": record_uuid(FLAG_KIND, trigger.key),
                    "resource": flag,
                    "request": {
                        "method": "POST",
                        "url": "Flag",
                        "ifNoneExist": f"identifier={flag_token}",
                    },
                }
            )
        entries.append(
            {
                "fullUrl": record_uuid(TASK_KIND, trigger.key),
                "resource": task,
                "request": {
                    "method": "POST",
                    "url": "Task",
                    "ifNoneExist": f"identifier={task_token}&status={open_tasks}",
                },
            }
        )
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        self.client.transaction(bundle)
        log.info("monitoring.alert_raised", alert=trigger.key, severity=trigger.severity)
        return "new"

    def _write(
        self, resource_type: str, resource_id: str, edit: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None:
        """Read, edit and write back under If-Match; one retry when someone else wrote in
        between (the edit is applied again to their version)."""
        for attempt in (1, 2):
            current = self.client.read(resource_type, resource_id, headers=NO_CACHE)
            updated = edit(current.resource)
            try:
                self.client.update(updated, if_match=current.version_id)
                return
            except ConflictError:
                if attempt == 2:
                    raise

    def _change(self, trigger: Trigger, current: _Open, info: _Patient, now: datetime) -> None:
        focus = self._focus(trigger, info)

        def edit_flag(flag: dict[str, Any]) -> dict[str, Any]:
            out = _editable(flag)
            out["code"] = {**(out.get("code") or {}), "text": trigger.message}
            return fhirjson.validate(out, source=f"Flag {trigger.key}")

        def edit_task(task: dict[str, Any]) -> dict[str, Any]:
            out = _editable(task)
            out["description"] = trigger.message
            out["priority"] = PRIORITY[trigger.severity]
            out["lastModified"] = _stamp(now)
            if focus is not None:
                out["focus"] = {"reference": focus.reference}
            return fhirjson.validate(out, source=f"Task {trigger.key}")

        if current.alert.flag_id:
            self._write("Flag", current.alert.flag_id, edit_flag)
        if current.alert.task_id:
            self._write("Task", current.alert.task_id, edit_task)
        log.info("monitoring.alert_updated", alert=trigger.key)

    def _recover(self, current: _Open, info: _Patient, now: datetime) -> None:
        alert = current.alert
        rule = self._rules_by_id[alert.rule_id]
        instrument = self.library.get(rule.instrument)
        note = recovery_note(
            rule,
            instrument,
            info.series.get(instrument.id, []),
            care_plan_active=info.care_plan_active,
        )

        def close_flag(flag: dict[str, Any]) -> dict[str, Any]:
            return closed_flag(flag, now=now)

        def complete_task(task: dict[str, Any]) -> dict[str, Any]:
            out = completed_task(task, now=now, note=note)
            out["statusReason"] = {"text": RECOVERED_REASON}
            return fhirjson.validate(out, source=f"Task {alert.key}")

        if alert.flag_id:
            self._write("Flag", alert.flag_id, close_flag)
        if alert.task_id:
            self._write("Task", alert.task_id, complete_task)
        log.info("monitoring.alert_closed", alert=alert.key)

    # -- the report ------------------------------------------------------------------------

    def resolve_patient(self, patient: str) -> str:
        """The server id of ``patient``: ``system|value`` (an identifier), ``Patient/123`` or
        ``123``."""
        if "|" in patient:
            register_sensitive(patient, patient.split("|", 1)[1])
            hits = list(self.client.search("Patient", {"identifier": patient}, headers=NO_CACHE))
            if not hits:
                raise InvalidInputError(Problem("--patient", "patient", "no such patient"))
            return str(hits[0]["id"])
        return patient.removeprefix("Patient/")

    def plans(self, patient_id: str) -> list[Plan]:
        """The patient's care plans with their goals, as on the server (EHR-made included;
        a plan that cannot be read, e.g. one naming no clinician, is left out)."""
        subject = f"Patient/{patient_id}"
        goals = list(self.client.search("Goal", {"subject": subject}, headers=NO_CACHE))
        observations = [
            o
            for o in self.client.search("Observation", {"subject": subject}, headers=NO_CACHE)
            if any(
                c.get("code") in ("gas-rating", "gas-t-score")
                for c in (o.get("code") or {}).get("coding") or []
            )
        ]
        options = GoalOptions(namespace=self._ns, canonical_base=self._base)
        out: list[Plan] = []
        for cp in self._careplans(patient_id):
            try:
                out.append(plan_from_fhir(cp, goals, observations, None, options))
            except InvalidInputError as exc:
                log.warning(
                    "monitoring.plan_unreadable",
                    careplan=f"CarePlan/{cp.get('id')}",
                    reason=str(exc.problems[0].reason),
                )
        return out

    def report_html(self, patient: str, *, label: str | None = None) -> str:
        """The clinician's report of one patient as a self-contained HTML page.

        The client is shown only as ``label`` (default ``Client <server id>``): the page
        carries no name, no identifier of the person. Write it where the user asked; never
        log it.
        """
        patient_id = self.resolve_patient(patient)
        now = self._now()
        info = self._patient(patient_id, now)
        by_id: dict[str, Instrument] = {i.id: i for i in self.library.all()}
        series = [
            series_for(by_id[instrument_id], checkins, self.rules)
            for instrument_id, checkins in sorted(info.series.items())
            if checkins
        ]
        goals = report_goals(self.plans(patient_id))
        alerts: list[tuple[str, str, date | datetime | None]] = []
        for entry in self.open_alerts(patient_id).get(patient_id, []):
            rule = self._rules_by_id.get(entry.alert.rule_id)
            priority = str((entry.task or {}).get("priority"))
            severity = rule.severity if rule else _SEVERITY_OF_PRIORITY.get(priority, "medium")
            alerts.append((severity, entry.alert.description or "", entry.alert.since))
        return render_report_html(
            label or f"Client {patient_id}", series, goals, alerts, as_of=now.date()
        )

    def write_report(
        self, patient: str, out: Path, *, png: Path | None = None, label: str | None = None
    ) -> list[Path]:
        """Write the report to ``out`` (and a screenshot to ``png``); the paths written."""
        page = self.report_html(patient, label=label)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
        written = [out]
        if png is not None:
            written.append(render_png(out, png))
        return written
