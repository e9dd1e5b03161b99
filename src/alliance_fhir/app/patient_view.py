"""One patient as the monitor and the report see them: every check-in of our instruments
(scored into per-instrument series), and whether a care plan of ours is active.

Reads only; shared by the monitor run (evaluation and alert writing) and the report, so
both judge a patient from the same data.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from alliance_fhir.adapters.dates import parse_when
from alliance_fhir.adapters.goals import KIND_PLAN
from alliance_fhir.adapters.identity import identifier_system
from alliance_fhir.app.goal_pull import care_plans
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.fhir import FhirClient
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.evaluate import CheckIn
from alliance_fhir.monitoring.pull import (
    NO_CACHE,
    ServerResponse,
    instruments_by_url,
    patient_id_of,
    questionnaire_urls,
    read_response,
    score_response,
)

__all__ = ["PatientReader", "PatientView", "identifier_value", "not_scored_line"]

log = get_logger("alliance_fhir.monitoring")


def identifier_value(resource: Mapping[str, Any], system: str) -> str | None:
    """The value of the resource's identifier in ``system`` (ours), if it has one."""
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def not_scored_line(problems: list[Problem]) -> str:
    """``QuestionnaireResponse/<id>: <linkId or field>: <reason>`` (every problem, ``; ``
    between): what the monitor and the report say about a response they could not score."""
    location = problems[0].location if problems else "QuestionnaireResponse"
    parts = [f"{p.field.removeprefix('answers.')}: {p.reason}" for p in problems]
    return f"{location}: " + "; ".join(parts)


@dataclass
class PatientView:
    """Everything one patient's evaluation reads from the server. ``withdrawn`` maps the
    references of responses entered in error to their instrument id; ``not_scored`` the
    lines of responses that could not be read (:func:`not_scored_line`)."""

    patient_id: str
    responses: list[ServerResponse]
    series: dict[str, list[CheckIn]]
    care_plan_active: bool
    care_plan_start: datetime | None
    plan_owner: dict[str, Any] | None
    withdrawn: Mapping[str, str] = field(default_factory=dict)
    not_scored: tuple[str, ...] = ()


class PatientReader:
    """Reads QuestionnaireResponses of our instruments and our CarePlans from the server."""

    def __init__(self, client: FhirClient, library: InstrumentLibrary, settings: Settings) -> None:
        self.client = client
        self._ns = settings.identifier_namespace
        base = settings.canonical_base
        self._by_url = instruments_by_url(library.all(), base)
        self.urls = questionnaire_urls(library.all(), base)
        self._plan_system = identifier_system(KIND_PLAN, self._ns)

    def read_all(
        self, raw: Iterable[Mapping[str, Any]], not_scored: list[str] | None
    ) -> list[ServerResponse]:
        """The responses that are of our instruments, withdrawn ones (entered in error)
        included; unreadable ones (answers we do not understand among them) are logged (id
        and reason only) and listed in ``not_scored`` when given."""
        out: list[ServerResponse] = []
        for qr in raw:
            try:
                resp = read_response(qr, self._by_url, namespace=self._ns, withdrawn=True)
            except InvalidInputError as exc:
                line = not_scored_line(exc.problems)
                location, _, reason = line.partition(": ")
                log.warning("monitoring.response_unreadable", response=location, reason=reason)
                if not_scored is not None:
                    not_scored.append(line)
                continue
            if resp is not None:
                out.append(resp)
        return out

    def responses(self, patient_id: str) -> list[ServerResponse]:
        """The patient's check-ins (withdrawn ones left out)."""
        return [r for r in self.responses_and_problems(patient_id)[0] if not r.withdrawn]

    def responses_and_problems(self, patient_id: str) -> tuple[list[ServerResponse], list[str]]:
        """The patient's responses (withdrawn included) and the not-scored lines."""
        params = {
            "subject": f"Patient/{patient_id}",
            "questionnaire": ",".join(self.urls),
            "_count": "100",
        }
        raw = self.client.search("QuestionnaireResponse", params, headers=NO_CACHE)
        not_scored: list[str] = []
        return self.read_all(raw, not_scored), not_scored

    def active_plan_patients(self) -> set[str]:
        """Server ids of patients with an active CarePlan of ours."""
        params = {"identifier": f"{self._plan_system}|", "status": "active", "_count": "100"}
        found = self.client.search("CarePlan", params, headers=NO_CACHE)
        return {pid for cp in found if (pid := patient_id_of(cp.get("subject")))}

    def view(self, patient_id: str, as_of: datetime) -> PatientView:
        """The patient's check-ins by instrument and their care-plan state on ``as_of``."""
        every, not_scored = self.responses_and_problems(patient_id)
        responses = [r for r in every if not r.withdrawn]
        withdrawn = {r.reference: r.instrument.id for r in every if r.withdrawn}
        series: dict[str, list[CheckIn]] = defaultdict(list)
        for resp in responses:
            series[resp.instrument.id].append(score_response(resp).checkin)
        active = False
        start: datetime | None = None
        owners: list[tuple[bool, str]] = []
        for cp in care_plans(self.client, patient_id):
            if identifier_value(cp, self._plan_system) is None:
                continue
            author = cp.get("author")
            ref = str(author.get("reference") or "") if isinstance(author, Mapping) else ""
            if ref.startswith(("Practitioner/", "PractitionerRole/")):
                owners.append((cp.get("status") != "active", ref))
            if cp.get("status") != "active":
                continue
            period = cp.get("period") or {}
            end = parse_when(period.get("end"))
            if end is not None and end.date() < as_of.date():
                continue
            active = True
            begun = parse_when(period.get("start"))
            if begun is not None and (start is None or begun < start):
                start = begun
        # the clinician of the patient's plan (an active one first) owns its alerts
        owner = {"reference": min(owners)[1]} if owners else None
        return PatientView(
            patient_id,
            responses,
            dict(series),
            active,
            start,
            owner,
            withdrawn=withdrawn,
            not_scored=tuple(not_scored),
        )
