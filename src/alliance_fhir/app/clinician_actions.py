"""What a clinician does to an alert from the SMART view: acknowledge it, or record that it
was discussed with the client. Both edit our alert Task, under If-Match.

* **Acknowledge** sets ``Task.status`` to ``accepted`` (FHIR: "the potential performer has
  agreed to execute the task"): the clinician has seen it and owns it. The alert stays open
  (``accepted`` is an open status): it closes when the rule stops applying or the clinician
  completes the Task in the EHR. The monitor's three-way merge keeps the clinician's status
  (only they changed it), so a later run never undoes the acknowledgement.
* **Discussed with client** adds a ``Task.output`` typed :data:`DISCUSSED_CODE` whose
  ``valueDateTime`` is when it was recorded. Why an output and not a note or a status: the
  conversation *is* what the Task asked for (an output is "a result produced by the task"),
  it is coded so an EHR or a report can count it, and ``output`` is not among the fields the
  monitor owns (``alert_writer.TASK_FIELDS``), so no later run merges it away. It carries
  no free text: the content of the conversation belongs in the clinician's note, not here.

Each edit reads the Task, checks it is ours (our identifier) and of the patient in the
session, and writes it back with the version the clinician's page showed as If-Match: a
Task someone changed meanwhile answers 412, raised as ``ConflictError`` (the page says
"changed meanwhile, reload"), and nothing is overwritten.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from alliance_fhir.adapters.identity import identifier_system
from alliance_fhir.app.patient_view import identifier_value
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.fhir import FhirClient
from alliance_fhir.monitoring.alerts import TASK_KIND

__all__ = [
    "ACKNOWLEDGED_STATUS",
    "DISCUSSED_CODE",
    "acknowledge",
    "discussed_on",
    "discussed_type",
    "mark_discussed",
]

#: The Task status of an acknowledged alert.
ACKNOWLEDGED_STATUS = "accepted"
#: The ``Task.output.type`` code of "discussed with client".
DISCUSSED_CODE = "discussed-with-client"
_DISCUSSED_DISPLAY = "Discussed with client"


def discussed_type(canonical_base: str) -> dict[str, Any]:
    """The CodeableConcept typing a "discussed with client" output."""
    system = f"{canonical_base.rstrip('/')}/CodeSystem/clinician-action"
    return {
        "coding": [{"system": system, "code": DISCUSSED_CODE, "display": _DISCUSSED_DISPLAY}],
        "text": _DISCUSSED_DISPLAY,
    }


def discussed_on(task: dict[str, Any]) -> str | None:
    """When the alert's Task was last marked discussed (``YYYY-MM-DD``), if ever."""
    days = [
        str(out.get("valueDateTime"))[:10]
        for out in task.get("output") or []
        if isinstance(out, dict)
        and any(
            isinstance(c, dict) and c.get("code") == DISCUSSED_CODE
            for c in (out.get("type") or {}).get("coding") or []
        )
        and out.get("valueDateTime")
    ]
    return max(days) if days else None


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _our_task(
    client: FhirClient, settings: Settings, patient_id: str, task_id: str
) -> dict[str, Any]:
    """The Task, if it is one of our alert Tasks about ``patient_id``; else InvalidInputError
    (the same answer whether it does not exist or is someone else's)."""
    task = client.read("Task", task_id).resource
    system = identifier_system(TASK_KIND, settings.identifier_namespace)
    subject = (task.get("for") or {}).get("reference")
    if identifier_value(task, system) is None or subject != f"Patient/{patient_id}":
        raise InvalidInputError(Problem(f"Task/{task_id}", "for", "not an alert of this patient"))
    return {k: copy.deepcopy(v) for k, v in task.items() if k not in ("meta", "text")}


def acknowledge(
    client: FhirClient,
    settings: Settings,
    patient_id: str,
    task_id: str,
    version: str | None,
    *,
    now: datetime,
) -> None:
    """Mark the alert's Task ``accepted`` (see the module docstring), If-Match ``version``."""
    task = _our_task(client, settings, patient_id, task_id)
    task["status"] = ACKNOWLEDGED_STATUS
    task["lastModified"] = _stamp(now)
    client.update(task, if_match=version, return_representation=False)


def mark_discussed(
    client: FhirClient,
    settings: Settings,
    patient_id: str,
    task_id: str,
    version: str | None,
    *,
    now: datetime,
) -> None:
    """Add a "discussed with client" output to the alert's Task, If-Match ``version``."""
    task = _our_task(client, settings, patient_id, task_id)
    outputs = list(task.get("output") or [])
    outputs.append({"type": discussed_type(settings.canonical_base), "valueDateTime": _stamp(now)})
    task["output"] = outputs
    task["lastModified"] = _stamp(now)
    client.update(task, if_match=version, return_representation=False)
