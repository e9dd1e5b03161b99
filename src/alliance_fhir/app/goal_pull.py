"""Finding a patient on the server and pulling their goal plans back from it.

Used by ``alliance-fhir pull goals`` and by the clinician's report. The plans are read as the
server holds them, EHR-made goals linked to a plan included, through the one tolerant reader
(``adapters.goals.from_fhir``): a Goal or CarePlan that cannot be read (our identifier with a
value in another shape, a plan naming no clinician) is left out and becomes a problem naming
its server id and JSON path (:class:`GoalPull`); the rest is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from alliance_fhir.adapters.goals.from_fhir import read_goals, read_plan
from alliance_fhir.app.records import goal_options
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.fhir import FhirClient
from alliance_fhir.goals import Plan
from alliance_fhir.log import get_logger, register_sensitive
from alliance_fhir.monitoring.pull import NO_CACHE

__all__ = [
    "GAS_CODES",
    "GoalPull",
    "care_plans",
    "pull_goal_plans",
    "pull_plans",
    "resolve_patient",
]

log = get_logger("alliance_fhir.monitoring")

#: Observation codes of goal attainment scaling, read back with the goals.
GAS_CODES = ("gas-rating", "gas-t-score")


def resolve_patient(client: FhirClient, patient: str) -> str:
    """The server id of ``patient``: ``system|value`` (an identifier), ``Patient/123`` or
    ``123``. The identifier's value is registered as sensitive before any request."""
    if "|" in patient:
        register_sensitive(patient, patient.split("|", 1)[1])
        hits = list(client.search("Patient", {"identifier": patient}, headers=NO_CACHE))
        if not hits:
            raise InvalidInputError(Problem("--patient", "patient", "no such patient"))
        return str(hits[0]["id"])
    return patient.removeprefix("Patient/")


def care_plans(client: FhirClient, patient_id: str) -> list[dict[str, Any]]:
    """Every CarePlan of the patient (ours and the EHR's), fresh from the server."""
    params = {"subject": f"Patient/{patient_id}", "_count": "100"}
    return list(client.search("CarePlan", params, headers=NO_CACHE))


@dataclass
class GoalPull:
    """A patient's plans as on the server, and the problems of the records left out."""

    plans: list[Plan] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def pull_plans(client: FhirClient, settings: Settings, patient_id: str) -> list[Plan]:
    """The patient's care plans with their goals (see :func:`pull_goal_plans`; the records
    that cannot be read are left out here, with a warning naming only their ids)."""
    return pull_goal_plans(client, settings, patient_id).plans


def pull_goal_plans(client: FhirClient, settings: Settings, patient_id: str) -> GoalPull:
    """The patient's care plans with their goals, as on the server (EHR-made included),
    and a problem for each Goal or CarePlan that cannot be read."""
    subject = f"Patient/{patient_id}"
    raw_goals = list(client.search("Goal", {"subject": subject}, headers=NO_CACHE))
    observations = [
        o
        for o in client.search("Observation", {"subject": subject}, headers=NO_CACHE)
        if any(c.get("code") in GAS_CODES for c in (o.get("code") or {}).get("coding") or [])
    ]
    options = goal_options(settings)
    goals, problems = read_goals(raw_goals, options)
    out = GoalPull(problems=problems)
    for cp in care_plans(client, patient_id):
        plan, found = read_plan(cp, goals, observations, None, options)
        out.problems.extend(found)
        if plan is not None:
            out.plans.append(plan)
    # the callers show the problems (pull goals as error lines, the report on the page)
    for problem in out.problems:
        log.info(
            "monitoring.record_unreadable",
            record=problem.location,
            path=problem.path,
            reason=problem.reason,
        )
    return out
