"""A patient's open alliance concerns, from resources already fetched: pure, no I/O.

The CDS Hooks service (cards when a chart opens) must judge a patient the way the monitor
does, but from what the EHR hands over in one request: our score Observations, our alert
Flags and Tasks. So:

* the *score* rules (``below-cutoff``, ``drop``, ``declining-trend``) are evaluated again,
  with :func:`~alliance_fhir.monitoring.evaluate.evaluate`, on the series read from the score
  Observations: a concern shows as soon as a check-in is pushed, and disappears when the
  scores recover, even before the next monitor run;
* rules that need what Observations do not carry (``item-floor`` reads answers,
  ``missed-checkin`` the care plan), rules we do not know, and baseline ``drop`` rules when
  the Observations are incomplete (the first check-ins may be missing) are taken from the
  monitor's open alerts (an active Flag or an open Task of ours);
* a rule that fires on the same check-in the clinician already closed its alert Task for
  (by hand, not our recovery) is not shown again, as the monitor does not raise it again.

Observation values are the rounded scores we wrote (``decimals`` of the instrument), so a
score within rounding of a cutoff may be judged differently from the monitor's exact one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from alliance_fhir.adapters.codesystem import score_coding
from alliance_fhir.adapters.dates import parse_when
from alliance_fhir.adapters.identity import identifier_system
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.monitoring.alerts import FLAG_KIND, TASK_KIND
from alliance_fhir.monitoring.evaluate import CheckIn, Trigger, evaluate
from alliance_fhir.monitoring.rules import Kind, Rule, Severity

__all__ = [
    "COUNTED_OBSERVATION_STATUSES",
    "SCORE_KINDS",
    "Concern",
    "ScoreSeries",
    "patient_concerns",
    "score_series",
]

#: Rule kinds judged from score Observations alone.
SCORE_KINDS: frozenset[Kind] = frozenset({"below-cutoff", "drop", "declining-trend"})

#: Observation statuses that count as a score (``entered-in-error`` is a withdrawn one).
COUNTED_OBSERVATION_STATUSES = frozenset({"final", "amended", "corrected"})

#: Task priority -> rule severity, for an open alert whose rule is not configured here.
_SEVERITY_OF_PRIORITY: dict[str, Severity] = {
    "routine": "low",
    "urgent": "medium",
    "asap": "high",
    "stat": "high",
}


@dataclass(frozen=True)
class Concern:
    """One open alliance concern for the clinician.

    ``origin`` says where it was found: ``scores`` (a rule fired on the score Observations
    now; ``values`` are the rule's message fields) or ``alert`` (an alert the monitor keeps
    open; ``values`` is empty). ``since`` is the date of the check-in that fired it, or when
    the alert was raised.
    """

    rule_id: str
    label: str
    severity: Severity
    message: str
    origin: Literal["scores", "alert"]
    kind: Kind | None = None
    instrument: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    since: datetime | None = None


@dataclass(frozen=True)
class ScoreSeries:
    """Check-ins read from score Observations, by instrument id; ``derived_from`` maps a
    check-in key to the QuestionnaireResponse reference its Observation was derived from."""

    series: Mapping[str, list[CheckIn]]
    derived_from: Mapping[str, str]


def _codings(concept: Any) -> list[tuple[str, str]]:
    if not isinstance(concept, Mapping):
        return []
    return [
        (str(c.get("system")), str(c.get("code")))
        for c in concept.get("coding") or []
        if isinstance(c, Mapping) and c.get("system") and c.get("code")
    ]


def _number(quantity: Any) -> float | None:
    value = quantity.get("value") if isinstance(quantity, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _identifier(resource: Mapping[str, Any], system: str) -> str | None:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, Mapping) and ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def score_series(
    observations: Iterable[Mapping[str, Any]],
    instruments: Iterable[Instrument],
    *,
    canonical_base: str,
    namespace: str,
) -> ScoreSeries:
    """The score Observations of our instruments as check-ins (total and subscales).

    An Observation counts when its code is the total score code of one of ``instruments``,
    its status is final, amended or corrected, and it has a date and a value; others are
    ignored. Its key is our ``score`` identifier (the assessment key), else its server id.
    """
    totals: dict[tuple[str, str], Instrument] = {}
    subscales: dict[tuple[str, str], tuple[str, str]] = {}
    for instrument in instruments:
        coding = score_coding(instrument, instrument.scoring.total, canonical_base)
        totals[(coding["system"], coding["code"])] = instrument
        for sub in instrument.scoring.subscales:
            sc = score_coding(instrument, sub, canonical_base)
            subscales[(sc["system"], sc["code"])] = (instrument.id, sub.id)
    score_system = identifier_system("score", namespace)
    series: dict[str, list[CheckIn]] = defaultdict(list)
    derived: dict[str, str] = {}
    for obs in observations:
        if obs.get("resourceType") != "Observation":
            continue
        if obs.get("status") not in COUNTED_OBSERVATION_STATUSES:
            continue
        found = next((totals[c] for c in _codings(obs.get("code")) if c in totals), None)
        when = parse_when(obs.get("effectiveDateTime"))
        total = _number(obs.get("valueQuantity"))
        if found is None or when is None or total is None:
            continue
        instrument = found
        key = _identifier(obs, score_system) or f"Observation/{obs.get('id')}"
        subs: dict[str, float | None] = {}
        for component in obs.get("component") or []:
            if not isinstance(component, Mapping):
                continue
            for c in _codings(component.get("code")):
                owner = subscales.get(c)
                if owner is not None and owner[0] == instrument.id:
                    subs[owner[1]] = _number(component.get("valueQuantity"))
        series[instrument.id].append(CheckIn(key, when, total, subscales=subs))
        for ref in obs.get("derivedFrom") or []:
            text = ref.get("reference") if isinstance(ref, Mapping) else None
            if isinstance(text, str) and text.startswith("QuestionnaireResponse/"):
                derived[key] = text
                break
    return ScoreSeries(dict(series), derived)


def _updated(resource: Mapping[str, Any]) -> datetime:
    return parse_when((resource.get("meta") or {}).get("lastUpdated")) or datetime.min.replace(
        tzinfo=UTC
    )


def _dismissed(
    trigger: Trigger,
    tasks: Sequence[Mapping[str, Any]],
    scores: ScoreSeries,
    *,
    open_statuses: Collection[str],
    recovered_reason: str,
) -> bool:
    """The monitor's rule: the newest Task of this alert was closed by a person (not by our
    recovery) and nothing new fired it since (the same check-in is its focus)."""
    latest = max(tasks, key=_updated, default=None)
    if latest is None or latest.get("status") in open_statuses:
        return False
    if (latest.get("statusReason") or {}).get("text") == recovered_reason:
        return False
    focus = scores.derived_from.get(trigger.focus_key or "")
    if focus is None:
        return False
    return (latest.get("focus") or {}).get("reference") == focus


def _by_key(resources: Iterable[Mapping[str, Any]], system: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = defaultdict(list)
    for res in resources:
        key = _identifier(res, system)
        if key:
            out[key].append(res)
    return out


def _alert_concern(
    rule_id: str,
    rule: Rule | None,
    flag: Mapping[str, Any] | None,
    task: Mapping[str, Any] | None,
) -> Concern:
    flag, task = flag or {}, task or {}
    message = str(task.get("description") or (flag.get("code") or {}).get("text") or "")
    label = rule.label if rule is not None else str((task.get("code") or {}).get("text") or "")
    severity: Severity = (
        rule.severity
        if rule is not None
        else _SEVERITY_OF_PRIORITY.get(str(task.get("priority")), "medium")
    )
    since = parse_when((flag.get("period") or {}).get("start")) or parse_when(
        task.get("authoredOn")
    )
    return Concern(
        rule_id=rule_id,
        label=label or rule_id,
        severity=severity,
        message=message or label or rule_id,
        origin="alert",
        kind=rule.kind if rule is not None else None,
        instrument=rule.instrument if rule is not None else None,
        since=since,
    )


def patient_concerns(
    patient_id: str,
    *,
    rules: Sequence[Rule],
    instruments: Iterable[Instrument],
    observations: Iterable[Mapping[str, Any]],
    flags: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    as_of: datetime,
    canonical_base: str,
    namespace: str,
    open_task_statuses: Collection[str],
    recovered_reason: str,
    observations_complete: bool = True,
) -> list[Concern]:
    """The patient's open concerns (see the module docstring), most severe first.

    ``patient_id`` is the server's Patient id (the monitor's alert keys carry it);
    ``observations`` our score Observations of that patient, ``flags`` and ``tasks`` our
    alert Flags and Tasks of that patient (any status). ``observations_complete`` is False
    when the Observations may miss the oldest check-ins (a truncated search), so rules
    comparing with the first check-ins are left to the open alerts.
    """
    library = {i.id: i for i in instruments}
    scores = score_series(
        observations, library.values(), canonical_base=canonical_base, namespace=namespace
    )
    by_id = {r.id: r for r in rules}
    judged = {
        r.id
        for r in rules
        if r.kind in SCORE_KINDS
        and r.instrument in library
        and (observations_complete or getattr(r.params, "reference", None) != "baseline")
    }
    task_system = identifier_system(TASK_KIND, namespace)
    flag_system = identifier_system(FLAG_KIND, namespace)
    tasks_by_key = _by_key(tasks, task_system)
    flags_by_key = _by_key(flags, flag_system)

    out: list[Concern] = []
    for instrument_id, series in sorted(scores.series.items()):
        usable = [by_id[r] for r in sorted(judged) if by_id[r].instrument == instrument_id]
        triggers = evaluate(
            usable,
            library[instrument_id],
            series,
            patient_key=patient_id,
            care_plan_active=False,
            as_of=as_of,
        )
        for trigger in triggers:
            if _dismissed(
                trigger,
                tasks_by_key.get(trigger.key, []),
                scores,
                open_statuses=open_task_statuses,
                recovered_reason=recovered_reason,
            ):
                continue
            rule = by_id[trigger.rule_id]
            out.append(
                Concern(
                    rule_id=rule.id,
                    label=rule.label,
                    severity=rule.severity,
                    message=trigger.message,
                    origin="scores",
                    kind=rule.kind,
                    instrument=rule.instrument,
                    values=dict(trigger.values),
                    since=parse_when(trigger.values.get("date")),
                )
            )

    for key in sorted(set(flags_by_key) | set(tasks_by_key)):
        rule_id, sep, pid = key.partition(":")
        if not sep or pid != patient_id or rule_id in judged:
            continue
        flag = next((f for f in flags_by_key.get(key, []) if f.get("status") == "active"), None)
        task = next(
            (t for t in tasks_by_key.get(key, []) if t.get("status") in open_task_statuses), None
        )
        if flag is None and task is None:
            continue
        out.append(_alert_concern(rule_id, by_id.get(rule_id), flag, task))
    rank = {"high": 0, "medium": 1, "low": 2}
    return sorted(out, key=lambda c: (rank[c.severity], c.rule_id))
