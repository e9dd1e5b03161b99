"""The monitor run: pull new check-ins, score what was completed elsewhere, evaluate the
rules, raise and close alerts on the server.

One :meth:`Monitor.run` (the CLI's ``alliance-fhir monitor``):

1. **Pull** the QuestionnaireResponses of our instruments changed since the watermark
   (``pull:qr`` in the state store, minus ``pull_overlap_seconds``), oldest first, every
   page, with ``Cache-Control: no-cache`` (a server that cannot search them by
   ``_lastUpdated`` gets a full paged scan, filtered by ``meta.lastUpdated`` on our side);
   a pull of more than ``bulk_threshold`` responses from a server that offers ``$export``
   goes through Bulk Data instead (``app.response_pull``); the run says which way. A
   response completed elsewhere (no identifier of ours) gets its score Observation (key
   ``ext-<server id>``, ``derivedFrom`` the response) through the sync engine: conditional,
   tracked in the state store, never duplicated. Ours already have theirs (pushed with them).
   Unscorable responses are logged with their id, key and reason only, and listed as not
   scored; so are responses with answers we do not understand (a foreign coding): no score,
   no alert. A response withdrawn since (``entered-in-error``) withdraws the score
   Observation we wrote for it (the same record, status ``entered-in-error``, through the
   sync engine; only when the state store shows we wrote one), leaves the trends, and its
   patient is evaluated again.
2. **Evaluate** every patient touched by the pull, every patient with an open alert and every
   patient with an active care plan of ours (so a *missed* check-in is noticed although
   nothing new arrived); ``all_patients`` adds everyone with a response. For each, all of
   their responses (not only the new ones) become per-instrument series for
   ``evaluate.evaluate``; ``alerts.decide_alerts`` compares the triggers with the alerts
   open on the server (our ``alert-flag``/``alert-task`` identifiers).
3. **Alerts** are written by :class:`~alliance_fhir.app.alert_writer.AlertWriter`
   (new -> Flag + Task, changed -> patched, recovered -> closed; see there). A server that
   takes no Flag gets the Task alone, one that takes no Task neither (``alert_resources``,
   ``app.alert_mode``); the run says so once (log and ``MonitorResult.alert_note``).
4. The watermark advances (to the newest ``meta.lastUpdated`` the server sent, its clock)
   only when the run had no failures, so a failed run is simply repeated.

Nothing here prints; the PHI rules of ``alliance_fhir.log`` apply to every log line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alliance_fhir.adapters.record import Desired
from alliance_fhir.app.alert_mode import alert_carrier
from alliance_fhir.app.alert_writer import (
    OPEN_TASK_STATUSES,
    RECOVERED_REASON,
    AlertWriter,
    OpenOnServer,
)
from alliance_fhir.app.engine import sync_engine, write_policy
from alliance_fhir.app.patient_view import PatientReader
from alliance_fhir.app.response_pull import pull_responses
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import AllianceFhirError
from alliance_fhir.fhir import Capabilities, FhirClient
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.alerts import AlertDecision, decide_alerts
from alliance_fhir.monitoring.evaluate import Trigger, evaluate
from alliance_fhir.monitoring.pull import (
    WATERMARK,
    ServerResponse,
    newest_update,
    score_response,
    since_for,
)
from alliance_fhir.monitoring.rules import Rule, load_rules
from alliance_fhir.sync.engine import Progress, SyncResult
from alliance_fhir.sync.state import StateStore

__all__ = [
    "OPEN_TASK_STATUSES",
    "RECOVERED_REASON",
    "Monitor",
    "MonitorResult",
    "PatientOutcome",
    "configured_rules",
]

log = get_logger("alliance_fhir.monitoring")

_QR = "QuestionnaireResponse"


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
    ``not_scored`` lists ``QuestionnaireResponse/<id>...: <linkId or field>: <reason>`` lines
    (no PHI); ``withdrawn`` counts responses entered in error whose score was withdrawn."""

    pulled: int = 0
    external: int = 0
    withdrawn: int = 0
    not_scored: list[str] = field(default_factory=list)
    patients: list[PatientOutcome] = field(default_factory=list)
    alerts: Counter[str] = field(default_factory=Counter)
    sync: SyncResult | None = None
    watermark: str | None = None
    failures: list[str] = field(default_factory=list)
    #: How alerts were carried when less than Flag + Task (``Task only (...)``), else None.
    alert_note: str | None = None
    #: Which way the responses were pulled, and why (``pulled via bulk $export (...)``).
    pulled_via: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and (self.sync is None or self.sync.ok)


def configured_rules(library: InstrumentLibrary, settings: Settings) -> list[Rule]:
    """The bundled rules plus those in ``settings.mappings_dir``."""
    extra = [settings.mappings_dir] if settings.mappings_dir else []
    return load_rules(library.all(), extra)


class Monitor:
    """Pull, score, evaluate, alert (:meth:`run`).

    ``rules`` default to :func:`configured_rules`. ``progress`` sees the sync engine's
    bundles (score Observations). ``now`` gives the evaluation time (tests pin it).
    ``expected_instruments`` are evaluated for a patient with an active care plan even
    before their first response to it (so "no check-in yet" can raise a missed-check-in
    alert); other instruments only once the patient has answered them.
    """

    def __init__(
        self,
        client: FhirClient,
        store: StateStore,
        library: InstrumentLibrary,
        settings: Settings,
        rules: Sequence[Rule] | None = None,
        *,
        progress: Progress | None = None,
        now: Callable[[], datetime] | None = None,
        expected_instruments: Collection[str] = (),
        capabilities: Capabilities | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.library = library
        self.settings = settings
        self.rules = list(configured_rules(library, settings) if rules is None else rules)
        self._progress = progress
        self._now = now or (lambda: datetime.now(UTC))
        self.expected_instruments = frozenset(expected_instruments)
        self._capabilities = capabilities
        self._ns = settings.identifier_namespace
        self._base = settings.canonical_base
        self.patients = PatientReader(client, library, settings)
        caps = capabilities or Capabilities.unknown()
        self.carrier = alert_carrier(settings.alert_resources, caps)
        policy = write_policy(settings, caps)
        self.alerts = AlertWriter(
            client,
            library,
            settings,
            self.rules,
            store,
            resources=self.carrier.resources,
            transactions=all(policy.mode_of(t) == "transaction" for t in ("Flag", "Task")),
        )

    def run(self, *, all_patients: bool = False) -> MonitorResult:
        """Pull, score, evaluate and alert (see the module docstring)."""
        now = self._now()
        result = MonitorResult()
        if self.carrier.degraded:
            result.alert_note = self.carrier.describe()
            log.warning(
                "monitor.alerts_degraded",
                resources=self.carrier.resources,
                reason=self.carrier.reason,
            )
        previous = self.store.watermark(WATERMARK)
        since = None if all_patients else since_for(previous, self.settings.pull_overlap_seconds)
        raw = self._pull(since, result)
        every = self.patients.read_all(raw, result.not_scored)
        responses = [r for r in every if not r.withdrawn]
        result.pulled = len(responses)
        self._score_external(every, result)

        open_alerts = self.alerts.open_alerts()
        patients = {r.patient_id for r in every} | set(open_alerts)
        patients |= self.patients.active_plan_patients()
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
        # an alert the clinician and we both changed: named, exit 1, as a Goal conflict is
        result.failures.extend(f"conflict {c}" for c in self.alerts.conflicts)

        newest = newest_update(raw, previous)
        if result.ok and newest is not None:
            self.store.set_watermark(WATERMARK, newest)
        result.watermark = self.store.watermark(WATERMARK)
        log.info(
            "monitor.done",
            pulled=result.pulled,
            external=result.external,
            not_scored=len(result.not_scored),
            withdrawn=result.withdrawn,
            patients=len(result.patients),
            failures=len(result.failures),
            **{f"alerts_{k}": v for k, v in sorted(result.alerts.items())},
        )
        return result

    def _pull(self, since: str | None, result: MonitorResult) -> list[dict[str, Any]]:
        """The responses changed since ``since``: through ``$export`` for a large pull where
        the server offers it, else paged search (see ``app.response_pull``). A bulk pull's
        bad lines and export errors are failures, so the watermark stays put."""
        pulled = pull_responses(
            self.client, self.patients.urls, since, self.settings, self._capabilities
        )
        result.pulled_via = pulled.describe()
        result.failures.extend(pulled.problems)
        return pulled.resources

    def _score_external(self, responses: Sequence[ServerResponse], result: MonitorResult) -> None:
        """Score Observations for responses completed elsewhere, and withdrawn ones for
        responses entered in error, through the sync engine."""
        desired: list[Desired] = []
        for resp in responses:
            if resp.withdrawn:
                withdrawn = self._withdrawn_score(resp)
                if withdrawn is not None:
                    result.withdrawn += 1
                    desired.append(withdrawn)
                continue
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
            engine = sync_engine(self.settings, self.client, self.store, progress=self._progress)
            result.sync = engine.run(desired, command="monitor")

    def _withdrawn_score(self, resp: ServerResponse) -> Desired | None:
        """The score Observation we wrote for ``resp``, now ``entered-in-error``; None when we
        wrote none (the state store has no such record) or the answers cannot be scored."""
        if self.store.get("score", resp.key) is None:
            return None
        scored = score_response(
            resp, observation=True, canonical_base=self._base, namespace=self._ns
        )
        if scored.observation is None:
            return None
        log.info("monitoring.score_withdrawn", response=resp.reference, assessment=resp.key)
        return Desired.identified(
            "score",
            resp.key,
            scored.observation,
            namespace=self._ns,
            group=f"assessment:{resp.key}",
        )

    def evaluate_patient(
        self,
        patient_id: str,
        open_alerts: Sequence[OpenOnServer] | None = None,
        *,
        now: datetime | None = None,
        result: MonitorResult | None = None,
    ) -> PatientOutcome:
        """Evaluate one patient (server id) and write the alert decisions."""
        as_of = now or self._now()
        if open_alerts is None:
            open_alerts = self.alerts.open_alerts(patient_id).get(patient_id, [])
        info = self.patients.view(patient_id, as_of)
        # an instrument whose check-in was withdrawn is evaluated again even when none is left,
        # so the alerts that check-in raised are closed
        evaluated = set(info.series) | set(info.withdrawn.values())
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
            state = self.alerts.apply(decision, opened.get(decision.key), info, as_of)
            counts[state] += 1
        return outcome
