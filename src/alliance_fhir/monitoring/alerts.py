"""Alerts for the clinician: the open/close decision and the Flag and Task that carry them.

One alert per rule and patient. Its key, ``{rule_id}:{patient_key}``, is the identifier value
of both its Flag (kind ``alert-flag``) and its Task (kind ``alert-task``), so writes are
conditional on the identifier and re-running never creates a second alert.

:func:`decide_alerts` compares the triggers of this run with the alerts open on the server:

=============  ===========================================  ====================================
state          when                                         writes
=============  ===========================================  ====================================
``new``        a trigger with no open alert                  create Flag (active) + Task
``changed``    open, still firing, the message changed       update Flag code.text and Task
                                                            description (same identifier)
``unchanged``  open, still firing, same message              nothing
``recovered``  open, no trigger any more                     Flag -> inactive with period.end;
                                                            Task -> completed with a note
=============  ===========================================  ====================================

Task priority from rule severity: ``low`` -> ``routine``, ``medium`` -> ``urgent``,
``high`` -> ``asap``. ``stat`` is never used: a strained alliance calls for the clinician's
attention soon, not an emergency response.

Every builder is pure: the same arguments give byte-identical JSON (``fhirjson.dumps``).
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.codesystem import codes_system
from alliance_fhir.adapters.identity import (
    DEFAULT_CANONICAL_BASE,
    DEFAULT_NAMESPACE,
    our_identifier,
)
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.monitoring.evaluate import Trigger, alert_key
from alliance_fhir.monitoring.rules import Rule, Severity

__all__ = [
    "FLAG_CATEGORY_SYSTEM",
    "FLAG_KIND",
    "PRIORITY",
    "TASK_KIND",
    "AlertDecision",
    "AlertState",
    "OpenAlert",
    "closed_flag",
    "completed_task",
    "decide_alerts",
    "flag_resource",
    "rule_code",
    "rule_coding",
    "rule_concepts",
    "task_resource",
]

#: Identifier kinds (``{namespace}/alert-flag``, ``{namespace}/alert-task``).
FLAG_KIND = "alert-flag"
TASK_KIND = "alert-task"

FLAG_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/flag-category"

#: Task.priority (FHIR request-priority) for each rule severity.
PRIORITY: dict[Severity, str] = {"low": "routine", "medium": "urgent", "high": "asap"}


# -- codes -------------------------------------------------------------------------------


def rule_code(rule_id: str) -> str:
    """Our code for a rule: ``alliance-rule-<rule_id>``."""
    return f"alliance-rule-{rule_id}"


def rule_coding(
    rule_id: str, label: str, canonical_base: str = DEFAULT_CANONICAL_BASE
) -> dict[str, Any]:
    return {"system": codes_system(canonical_base), "code": rule_code(rule_id), "display": label}


def rule_concepts(rules: Iterable[Rule]) -> list[dict[str, str]]:
    """CodeSystem concepts (code, display, definition) for ``rules``, sorted by code.

    Our CodeSystem is ``content: complete``: these must be listed in it beside the
    instrument codes.
    """
    out = []
    for rule in sorted(rules, key=lambda r: r.id):
        definition = rule.description or f"Alliance-monitoring rule {rule.id} ({rule.kind})."
        out.append({"code": rule_code(rule.id), "display": rule.label, "definition": definition})
    return out


# -- time --------------------------------------------------------------------------------


def _instant(when: datetime, field: str) -> str:
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidInputError(Problem("alert", field, "needs a timezone"))
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- Flag and Task -----------------------------------------------------------------------


def flag_resource(
    trigger: Trigger,
    *,
    subject_ref: Mapping[str, Any],
    namespace: str = DEFAULT_NAMESPACE,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    now: datetime,
    status: Literal["active", "inactive"] = "active",
    since: datetime | None = None,
) -> dict[str, Any]:
    """The Flag of ``trigger``'s alert, validated.

    ``period.start`` is ``since`` (when the alert was first raised; default ``now``); an
    ``inactive`` Flag also gets ``period.end = now``.
    """
    label = trigger.label or trigger.rule_id
    period: dict[str, Any] = {"start": _instant(since or now, "since")}
    if status == "inactive":
        period["end"] = _instant(now, "now")
    resource: dict[str, Any] = {
        "resourceType": "Flag",
        "identifier": [our_identifier(FLAG_KIND, trigger.key, namespace)],
        "status": status,
        "category": [
            {
                "coding": [
                    {"system": FLAG_CATEGORY_SYSTEM, "code": "behavioral", "display": "Behavioral"}
                ]
            }
        ],
        "code": {
            "coding": [rule_coding(trigger.rule_id, label, canonical_base)],
            "text": trigger.message,
        },
        "subject": dict(subject_ref),
        "period": period,
    }
    return fhirjson.validate(resource, source=f"Flag {trigger.key}")


def task_resource(
    trigger: Trigger,
    *,
    subject_ref: Mapping[str, Any],
    owner_ref: Mapping[str, Any] | None = None,
    focus_ref: Mapping[str, Any] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    now: datetime,
    status: Literal["requested", "completed"] = "requested",
    since: datetime | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The Task asking the clinician to act on ``trigger``, validated.

    ``focus_ref`` is the reference to the QuestionnaireResponse that fired the rule (none for
    a missed check-in); ``owner_ref`` the clinician when known. ``authoredOn`` is ``since``
    (default ``now``), ``lastModified`` is ``now``. ``note`` (e.g. the recovery note) is added
    as a Task.note timed ``now``.
    """
    label = trigger.label or trigger.rule_id
    resource: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [our_identifier(TASK_KIND, trigger.key, namespace)],
        "status": status,
        "intent": "order",
        "priority": PRIORITY[trigger.severity],
        "code": {"coding": [rule_coding(trigger.rule_id, label, canonical_base)], "text": label},
        "description": trigger.message,
    }
    if focus_ref is not None:
        resource["focus"] = dict(focus_ref)
    resource["for"] = dict(subject_ref)
    resource["authoredOn"] = _instant(since or now, "since")
    resource["lastModified"] = _instant(now, "now")
    if owner_ref is not None:
        resource["owner"] = dict(owner_ref)
    if note:
        resource["note"] = [{"time": _instant(now, "now"), "text": note}]
    return fhirjson.validate(resource, source=f"Task {trigger.key}")


def _editable(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy without ``meta`` and narrative, ``resourceType`` and ``id`` first."""
    head = [k for k in ("resourceType", "id") if k in resource]
    rest = [k for k in resource if k not in (*head, "meta", "text")]
    return {k: copy.deepcopy(resource[k]) for k in (*head, *rest)}


def closed_flag(flag: Mapping[str, Any], *, now: datetime) -> dict[str, Any]:
    """A copy of a server's open alert Flag made ``inactive`` with ``period.end = now``.

    ``meta`` and the narrative are dropped (the server owns the one; the other would be
    stale); ``id`` and everything else are kept.
    """
    out = _editable(flag)
    out["status"] = "inactive"
    period = dict(out.get("period") or {})
    period["end"] = _instant(now, "now")
    out["period"] = period
    return fhirjson.validate(out, source="Flag (closing)")


def completed_task(task: Mapping[str, Any], *, now: datetime, note: str) -> dict[str, Any]:
    """A copy of a server's open alert Task made ``completed`` with ``note`` appended."""
    out = _editable(task)
    out["status"] = "completed"
    out["lastModified"] = _instant(now, "now")
    out["note"] = [*(out.get("note") or []), {"time": _instant(now, "now"), "text": note}]
    return fhirjson.validate(out, source="Task (completing)")


# -- the decision ------------------------------------------------------------------------


class AlertState(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    UNCHANGED = "unchanged"
    RECOVERED = "recovered"


@dataclass(frozen=True)
class OpenAlert:
    """An alert open on the server, as the sync engine found it.

    ``description`` is the open Task's description (to tell whether the numbers changed);
    ``since`` the Flag's ``period.start`` (kept on updates).
    """

    rule_id: str
    patient_key: str
    flag_id: str | None = None
    task_id: str | None = None
    description: str | None = None
    since: datetime | None = None

    @property
    def key(self) -> str:
        return alert_key(self.rule_id, self.patient_key)


@dataclass(frozen=True)
class AlertDecision:
    """What to do about one alert. ``trigger`` is None when ``recovered``; ``open`` is None
    when ``new``."""

    state: AlertState
    key: str
    trigger: Trigger | None
    open: OpenAlert | None


def decide_alerts(
    triggers: Sequence[Trigger],
    open_alerts: Sequence[OpenAlert],
    *,
    patients: Collection[str] | None = None,
    rule_ids: Collection[str] | None = None,
) -> list[AlertDecision]:
    """One decision per alert key, sorted by key.

    Only open alerts within the evaluated scope can recover: pass ``patients`` (the patient
    keys evaluated in this run) and ``rule_ids`` (the rules evaluated) when the run did not
    cover everyone and every rule; open alerts outside them get no decision. Two triggers
    with one key is a bug in the caller (ValueError). Of several open alerts with one key
    (written by hand), the first is used.
    """
    fired: dict[str, Trigger] = {}
    for trigger in triggers:
        if trigger.key in fired:
            raise ValueError(f"two triggers for alert {trigger.key}")
        fired[trigger.key] = trigger
    current: dict[str, OpenAlert] = {}
    for alert in open_alerts:
        current.setdefault(alert.key, alert)

    decisions: list[AlertDecision] = []
    for key in sorted(set(fired) | set(current)):
        now_firing = fired.get(key)
        was_open = current.get(key)
        if now_firing is None:
            assert was_open is not None
            in_scope = (patients is None or was_open.patient_key in patients) and (
                rule_ids is None or was_open.rule_id in rule_ids
            )
            if in_scope:
                decisions.append(AlertDecision(AlertState.RECOVERED, key, None, was_open))
        elif was_open is None:
            decisions.append(AlertDecision(AlertState.NEW, key, now_firing, None))
        elif was_open.description != now_firing.message:
            decisions.append(AlertDecision(AlertState.CHANGED, key, now_firing, was_open))
        else:
            decisions.append(AlertDecision(AlertState.UNCHANGED, key, now_firing, was_open))
    return decisions
