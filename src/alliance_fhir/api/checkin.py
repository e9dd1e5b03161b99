"""Check-ins a client answers on a tablet: links, the form, and the submission.

>>> from alliance_fhir.api.checkin import Checkins, create_checkin_link
>>> link = create_checkin_link(settings, patient="urn:mrn|123", instrument="srs")
>>> link.url                                   # opaque: no MRN in it
'http://127.0.0.1:8765/checkin/gAAAA...'

:class:`Checkins` is what the page (``web.checkin``) calls. A submission is the client's
answers only; everything else of the QuestionnaireResponse (our identifier, subject, authored,
status, encounter) is set here from the link. It is then read by the same reader as a file
import (``adapters.response``), checked and scored by the same code (``assessments``),
written with its score Observation by the sync engine, and the monitor's rules run for that
patient, so an alert exists when the request returns. Nothing of the answers is kept
anywhere but in that FHIR write.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alliance_fhir.adapters.identity import our_identifier
from alliance_fhir.adapters.response import Origin, instruments_by_url, read_questionnaire_response
from alliance_fhir.adapters.response_files import FilePeople
from alliance_fhir.api import AllianceFhir
from alliance_fhir.api.checkin_links import (
    CheckinClaims,
    CheckinLink,
    LinkRefused,
    UsedLinks,
    create_checkin_link,
    parse_lifetime,
    read_token,
    used,
)
from alliance_fhir.app.goal_pull import resolve_patient
from alliance_fhir.app.monitor import Monitor
from alliance_fhir.app.records import Records, assessment_records, instrument_records
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import AllianceFhirError, InvalidInputError, Problem
from alliance_fhir.log import get_logger, register_sensitive

__all__ = [
    "CheckinForm",
    "CheckinLink",
    "Checkins",
    "LinkRefused",
    "Submitted",
    "create_checkin_link",
    "parse_lifetime",
]

log = get_logger("alliance_fhir.api.checkin")

#: Where a check-in's problems say they come from (no link, no patient: never PHI).
_ORIGIN = Origin("check-in")


@dataclass(frozen=True)
class CheckinForm:
    """What the page needs to render one link's form (no patient data in it)."""

    instrument: str
    title: str
    questionnaire: dict[str, Any]
    #: A clinician-completed form (the page words its note for the clinician).
    by_clinician: bool = False


@dataclass
class Submitted:
    """A submission written: the record key (our identifier's value), the server's counts
    and the alert states the monitor's rules left (``raised``, ``unchanged``, ...)."""

    key: str
    written: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)


class Checkins:
    """Links opened and answered, on one connection (thread-safe: submissions are one at a
    time, as they share one state store and one sync engine)."""

    def __init__(self, settings: Settings, *, af: AllianceFhir | None = None) -> None:
        self.settings = settings
        self.af = af or AllianceFhir(settings)
        self._used = UsedLinks(self.af.store)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.af.close()

    def link(
        self,
        *,
        patient: str,
        instrument: str,
        encounter: str | None = None,
        practitioner: str | None = None,
        expires: str = "2h",
    ) -> CheckinLink:
        """A link for a known instrument (``expires`` as ``2h``, ``30m``, ``1d``). A
        clinician-completed instrument needs the ``practitioner`` who answers it."""
        known = self.af.library.get(instrument)  # UnknownInstrumentError names the known ones
        if known.respondent == "clinician" and not practitioner:
            raise InvalidInputError(
                Problem(
                    "--practitioner",
                    "practitioner",
                    f"{instrument} is completed by a clinician: name them (system|value)",
                )
            )
        return create_checkin_link(
            self.settings,
            patient=patient,
            instrument=instrument,
            encounter=encounter,
            practitioner=practitioner,
            lifetime=parse_lifetime(expires),
        )

    def _claims(self, token: str) -> CheckinClaims:
        claims = read_token(self.settings, token)
        register_sensitive(claims.patient, claims.patient.split("|", 1)[1])
        if claims.practitioner:
            register_sensitive(claims.practitioner, claims.practitioner.split("|", 1)[1])
        if self._used.is_used(claims):
            raise used()
        return claims

    def open(self, token: str) -> CheckinForm:
        """The form of a valid, unused, unexpired link; :class:`LinkRefused` otherwise."""
        claims = self._claims(token)
        questionnaire = self.questionnaire(claims.instrument)
        by_clinician = self.af.library.get(claims.instrument).respondent == "clinician"
        title = str(questionnaire.get("title") or "")
        return CheckinForm(claims.instrument, title, questionnaire, by_clinician)

    def questionnaire(self, instrument_id: str) -> dict[str, Any]:
        """The instrument's Questionnaire exactly as sync publishes it: with the licensee's
        wording where an overlay is configured, else with neutral labels."""
        records = self._instrument_records(instrument_id, labels_only=False)
        found = [d for d in records.desired if d.kind == "questionnaire"]
        if not found:
            found = [
                d
                for d in self._instrument_records(instrument_id, labels_only=True).desired
                if d.kind == "questionnaire"
            ]
        if not found:
            raise InvalidInputError(
                Problem(f"instrument {instrument_id}", "questionnaire", "cannot be rendered")
            )
        return found[0].resource

    def _instrument_records(self, instrument_id: str, *, labels_only: bool) -> Records:
        return instrument_records(
            self.af.library, self.settings, labels_only=labels_only, only=[instrument_id]
        )

    def submit(self, token: str, items: Sequence[Any]) -> Submitted:
        """Build, check, score and write the response of one link; run the rules.

        :class:`LinkRefused` for a bad, expired or used link and InvalidInputError (every
        problem at once) for incomplete answers: both before anything is written. A failed
        write gives the link back, so the client can submit again."""
        with self._lock:
            claims = self._claims(token)
            records = self.records(claims, items)
            self._used.claim(claims)
            try:
                report = self.af.run(records, command="checkin")
                if report.result is None or not report.result.ok:
                    raise _WriteFailed()
            except BaseException:
                self._used.release(claims)
                raise
            outcome = Submitted(claims.assessment_key, dict(report.result.counts))
            outcome.alerts = self._evaluate(claims)
        log.info(
            "checkin.submitted",
            instrument=claims.instrument,
            assessment=claims.assessment_key,
            **{f"alerts_{k}": v for k, v in sorted(outcome.alerts.items())},
        )
        return outcome

    def records(self, claims: CheckinClaims, items: Sequence[Any]) -> Records:
        """The QuestionnaireResponse (+ score Observation) records of a submission, read by
        the one reader and scored by the one scorer; InvalidInputError with every problem."""
        questionnaire = self.questionnaire(claims.instrument)
        system, _, value = claims.patient.partition("|")
        qr: dict[str, Any] = {
            "resourceType": "QuestionnaireResponse",
            "identifier": our_identifier(
                "assessment", claims.assessment_key, self.settings.identifier_namespace
            ),
            "questionnaire": f"{questionnaire['url']}|{questionnaire['version']}",
            "status": "completed",
            "subject": {"type": "Patient", "identifier": {"system": system, "value": value}},
            "authored": datetime.now(UTC).isoformat(timespec="seconds"),
            "item": [item for item in items if isinstance(item, Mapping)],
        }
        if claims.practitioner:
            p_system, _, p_value = claims.practitioner.partition("|")
            qr["author"] = {
                "type": "Practitioner",
                "identifier": {"system": p_system, "value": p_value},
            }
        by_url = instruments_by_url(self.af.library.all(), self.settings.canonical_base)
        read = read_questionnaire_response(
            qr, _ORIGIN, by_url, FilePeople(), namespace=self.settings.identifier_namespace
        )
        register_sensitive(*read.free_text)
        records = assessment_records([read.assessment], self.af.library, self.settings)
        if records.problems:
            raise InvalidInputError(records.problems)
        if claims.encounter:
            ref = {"reference": f"Encounter/{claims.encounter}"}
            records.desired = [
                dataclasses.replace(d, resource={**d.resource, "encounter": ref}, hash="")
                if d.resource_type == "QuestionnaireResponse"
                else d
                for d in records.desired
            ]
        return records

    def _evaluate(self, claims: CheckinClaims) -> dict[str, int]:
        """The monitor's rules for this patient only; a failure is logged, not raised: the
        answers are written and the next ``monitor`` run evaluates them again."""
        af = self.af
        try:
            patient_id = resolve_patient(af.client, claims.patient)
            monitor = Monitor(
                af.client,
                af.store,
                af.library,
                self.settings,
                af.rules,
                capabilities=af.capabilities(),
            )
            outcome = monitor.evaluate_patient(patient_id)
        except AllianceFhirError as exc:
            log.error("checkin.rules_failed", error=type(exc).__name__)
            return {}
        counts: dict[str, int] = {}
        for decision in outcome.decisions:
            counts[decision.state] = counts.get(decision.state, 0) + 1
        return counts


class _WriteFailed(AllianceFhirError):
    """The server did not take the check-in (the run's failures are in ``status``)."""

    def __init__(self) -> None:
        super().__init__("the check-in could not be written; please try again")
