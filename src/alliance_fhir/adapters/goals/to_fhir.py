"""Domain -> FHIR: a goal plan as ``Desired`` records (Goals, GAS Observations, CarePlan).

References between resources of one plan (CarePlan -> Goal, Goal -> milestone Goal, Goal ->
Observation, Observation -> Goal) are written as ``urn:uuid:`` (``links="urn"``, for a
transaction bundle holding every record) or as conditional references
``Goal?identifier=system|value`` (``links="conditional"``). A goal already known on the server
(``source_id``) is always referenced as ``Goal/<id>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.goals.options import (
    ACHIEVEMENT_SYSTEM,
    FRAMING_PREFIX,
    GOAL_ACCEPTANCE,
    GOAL_RELATIONSHIP,
    KIND_GAS,
    KIND_GAS_SUMMARY,
    KIND_GOAL,
    KIND_PLAN,
    OBSERVATION_CATEGORY_SYSTEM,
    PRIORITY_SYSTEM,
    RELATIONSHIP_TYPE_SYSTEM,
    UCUM,
    GoalOptions,
    Ref,
    References,
    goal_identifier_value,
)
from alliance_fhir.adapters.identity import our_identifier, search_token
from alliance_fhir.adapters.record import Desired, UpdateMode, record_uuid
from alliance_fhir.goals._gas import gas_summaries
from alliance_fhir.goals._model import (
    Acceptance,
    Achievement,
    Concept,
    GasRating,
    Goal,
    Party,
    Plan,
    Priority,
    Target,
)

_ACHIEVEMENT_DISPLAY = {
    Achievement.IN_PROGRESS: "In Progress",
    Achievement.IMPROVING: "Improving",
    Achievement.WORSENING: "Worsening",
    Achievement.NO_CHANGE: "No Change",
    Achievement.ACHIEVED: "Achieved",
    Achievement.SUSTAINING: "Sustaining",
    Achievement.NOT_ACHIEVED: "Not Achieved",
    Achievement.NO_PROGRESS: "No Progress",
    Achievement.NOT_ATTAINABLE: "Not Attainable",
}
_PRIORITY_DISPLAY = {
    Priority.HIGH: "High Priority",
    Priority.MEDIUM: "Medium Priority",
    Priority.LOW: "Low Priority",
}


@dataclass
class _Linker:
    opts: GoalOptions

    def link(self, kind: str, key: str, rtype: str, source_id: str | None = None) -> Ref:
        if source_id:
            return {"reference": f"{rtype}/{source_id}"}
        if self.opts.links == "urn":
            return {"reference": record_uuid(kind, key, namespace=self.opts.namespace)}
        return {"reference": f"{rtype}?identifier={search_token(kind, key, self.opts.namespace)}"}


def plan_to_fhir(
    plan: Plan,
    refs: References | None = None,
    options: GoalOptions | None = None,
    *,
    validation: fhirjson.Validation = "full",
) -> list[Desired]:
    """Every resource of ``plan`` as a record for one bundle group (``plan:<key>``): Goals
    (parents before milestones), GAS Observations, GAS summaries (one per rating day), then
    the CarePlan. Each is validated (R4B; ``validation`` says how, see ``fhirjson``). Goals
    and the CarePlan are updated by merging onto the server's version (``merge``), so what
    the EHR added to them survives."""
    refs = refs or References()
    opts = options or GoalOptions()
    linker = _Linker(opts)
    entries: list[Desired] = []
    group = f"plan:{plan.key}"

    def add(kind: str, key: str, resource: dict[str, Any]) -> None:
        fhirjson.validate(resource, source=f"{kind} {key}", mode=validation)
        mode: UpdateMode = "merge" if kind in (KIND_GOAL, KIND_PLAN) else "if-match"
        entries.append(
            Desired.identified(
                kind, key, resource, namespace=opts.namespace, group=group, update_mode=mode
            )
        )

    observations: list[tuple[str, dict[str, Any]]] = []
    for goal in plan.all_goals():
        add(
            KIND_GOAL,
            goal_identifier_value(plan.key, goal.key),
            _goal_resource(plan, goal, refs, opts, linker),
        )
        for rating in goal.gas:
            key = _gas_key(plan, goal, rating)
            observations.append((key, _gas_resource(plan, goal, rating, key, refs, opts, linker)))
    for key, resource in observations:
        add(KIND_GAS, key, resource)
    if opts.gas_summary:
        by_key = {g.key: g for g in plan.all_goals()}
        for summary in gas_summaries(plan):
            key = f"{plan.key}/{summary.on.isoformat()}"
            rated = [by_key[k] for k in summary.goal_keys]
            sources = [
                _gas_key(plan, g, next(r for r in g.gas if r.on == summary.on)) for g in rated
            ]
            resource = {
                "resourceType": "Observation",
                "identifier": [our_identifier(KIND_GAS_SUMMARY, key, opts.namespace)],
                "status": "final",
                "category": [_survey()],
                "code": {
                    "coding": [
                        {
                            "system": opts.codes,
                            "code": "gas-t-score",
                            "display": "Goal attainment scaling summary T-score",
                        }
                    ],
                    "text": "GAS summary T-score",
                },
                "subject": refs.patient(plan.patient),
                "focus": [_goal_link(plan, g, linker) for g in rated],
                "effectiveDateTime": summary.on.isoformat(),
                "valueQuantity": {
                    "value": _number(Decimal(str(round(summary.t_score, 2)))),
                    "unit": "T-score",
                    "system": UCUM,
                    "code": "{T-score}",
                },
                "derivedFrom": [linker.link(KIND_GAS, k, "Observation") for k in sources],
            }
            add(KIND_GAS_SUMMARY, key, resource)
    add(KIND_PLAN, plan.key, _careplan_resource(plan, refs, opts, linker))
    return entries


def _number(value: Decimal) -> int | float:
    """A plain JSON number (resource dicts hold only JSON types): 5 stays 5, 2.50 is 2.5."""
    return int(value) if value == value.to_integral_value() else float(value)


def _gas_key(plan: Plan, goal: Goal, rating: GasRating) -> str:
    return f"{plan.key}/{goal.key}/{rating.on.isoformat()}"


def _goal_link(plan: Plan, goal: Goal, linker: _Linker) -> Ref:
    return linker.link(KIND_GOAL, goal_identifier_value(plan.key, goal.key), "Goal", goal.source_id)


def _survey() -> dict[str, Any]:
    coding = {"system": OBSERVATION_CATEGORY_SYSTEM, "code": "survey", "display": "Survey"}
    return {"coding": [coding]}


def _priority_cc(priority: Priority) -> dict[str, Any]:
    return {
        "coding": [
            {
                "system": PRIORITY_SYSTEM,
                "code": f"{priority}-priority",
                "display": _PRIORITY_DISPLAY[priority],
            }
        ]
    }


def _acceptance_ext(party_ref: Ref, stance: Acceptance) -> dict[str, Any]:
    subs: list[dict[str, Any]] = [
        {"url": "individual", "valueReference": party_ref},
        {"url": "status", "valueCode": str(stance.status)},
    ]
    if stance.priority is not None:
        subs.append({"url": "priority", "valueCodeableConcept": _priority_cc(stance.priority)})
    return {"url": GOAL_ACCEPTANCE, "extension": subs}


def _concept(concept: Concept) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if concept.code is not None:
        coding: dict[str, Any] = {}
        if concept.system is not None:
            coding["system"] = concept.system
        coding["code"] = concept.code
        out["coding"] = [coding]
    out["text"] = concept.text
    return out


def _quantity(value: Decimal, target: Target) -> dict[str, Any]:
    out: dict[str, Any] = {"value": _number(value)}
    if target.unit is not None:
        out["unit"] = target.unit
    if target.unit_code is not None:
        out["system"] = UCUM
        out["code"] = target.unit_code
    return out


def _target(target: Target) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if target.measure is not None:
        out["measure"] = _concept(target.measure)
    if target.value is not None:
        out["detailQuantity"] = _quantity(target.value, target)
    elif target.low is not None or target.high is not None:
        rng: dict[str, Any] = {}
        if target.low is not None:
            rng["low"] = _quantity(target.low, target)
        if target.high is not None:
            rng["high"] = _quantity(target.high, target)
        out["detailRange"] = rng
    elif target.detail is not None:
        out["detailString"] = target.detail
    if target.due is not None:
        out["dueDate"] = target.due.isoformat()
    return out


def _note_kind(opts: GoalOptions, kind: str) -> list[dict[str, Any]]:
    return [{"url": opts.ext("goal-note-kind"), "valueCode": kind}]


def _goal_resource(
    plan: Plan, goal: Goal, refs: References, opts: GoalOptions, linker: _Linker
) -> dict[str, Any]:
    patient = refs.patient(plan.patient)
    extensions: list[dict[str, Any]] = []
    if goal.agreement is not None:
        if goal.agreement.client is not None:
            extensions.append(_acceptance_ext(patient, goal.agreement.client))
        stance = goal.agreement.clinician
        if stance is not None:
            who = refs.practitioner(stance.clinician or plan.lead)
            extensions.append(_acceptance_ext(who, stance))
    for milestone in goal.milestones:
        extensions.append(
            {
                "url": GOAL_RELATIONSHIP,
                "extension": [
                    {
                        "url": "type",
                        "valueCodeableConcept": {
                            "coding": [
                                {
                                    "system": RELATIONSHIP_TYPE_SYSTEM,
                                    "code": "milestone",
                                    "display": "Milestone",
                                }
                            ]
                        },
                    },
                    {"url": "target", "valueReference": _goal_link(plan, milestone, linker)},
                ],
            }
        )
    if goal.proposed_by is not None:
        extensions.append({"url": opts.ext("goal-proposed-by"), "valueCode": str(goal.proposed_by)})
    extensions += [{"url": opts.ext("goal-strength"), "valueString": s} for s in goal.strengths]
    extensions += [{"url": opts.ext("goal-resource"), "valueString": r} for r in goal.resources]

    out: dict[str, Any] = {"resourceType": "Goal"}
    if goal.source_id:
        out["id"] = goal.source_id
    if extensions:
        out["extension"] = extensions
    out["identifier"] = [
        our_identifier(KIND_GOAL, goal_identifier_value(plan.key, goal.key), opts.namespace)
    ]
    out["lifecycleStatus"] = str(goal.lifecycle_status)
    if goal.achievement_status is not None:
        out["achievementStatus"] = {
            "coding": [
                {
                    "system": ACHIEVEMENT_SYSTEM,
                    "code": str(goal.achievement_status),
                    "display": _ACHIEVEMENT_DISPLAY[goal.achievement_status],
                }
            ]
        }
    if goal.priority is not None:
        out["priority"] = _priority_cc(goal.priority)
    description: dict[str, Any] = {}
    if goal.coding:
        description["coding"] = [c.model_dump(exclude_none=True) for c in goal.coding]
    description["text"] = goal.client_words
    out["description"] = description
    out["subject"] = patient
    if goal.start is not None:
        out["startDate"] = goal.start.isoformat()
    if goal.targets:
        out["target"] = [_target(t) for t in goal.targets]
    if goal.status_date is not None:
        out["statusDate"] = goal.status_date.isoformat()
    if goal.proposed_by is Party.CLINICIAN:
        out["expressedBy"] = refs.practitioner(plan.lead)
    elif goal.proposed_by is not None:
        out["expressedBy"] = patient
    if goal.addresses:
        out["addresses"] = [
            {k: v for k, v in (("reference", a.reference), ("display", a.text)) if v is not None}
            for a in goal.addresses
        ]
    notes: list[dict[str, Any]] = []
    if goal.clinician_framing is not None:
        notes.append(
            {
                "extension": _note_kind(opts, "clinician-framing"),
                "text": FRAMING_PREFIX + goal.clinician_framing,
            }
        )
    for note in goal.notes:
        entry: dict[str, Any] = {"extension": _note_kind(opts, "progress")}
        if note.on is not None:
            entry["time"] = note.on.isoformat()
        entry["text"] = note.text
        notes.append(entry)
    if notes:
        out["note"] = notes
    if goal.gas:
        out["outcomeReference"] = [
            linker.link(KIND_GAS, _gas_key(plan, goal, r), "Observation") for r in goal.gas
        ]
    return out


def _gas_resource(
    plan: Plan,
    goal: Goal,
    rating: GasRating,
    key: str,
    refs: References,
    opts: GoalOptions,
    linker: _Linker,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [our_identifier(KIND_GAS, key, opts.namespace)],
        "status": "final",
        "category": [_survey()],
        "code": {
            "coding": [
                {
                    "system": opts.codes,
                    "code": "gas-rating",
                    "display": "Goal attainment scaling rating",
                }
            ],
            "text": "Goal attainment (GAS)",
        },
        "subject": refs.patient(plan.patient),
        "focus": [_goal_link(plan, goal, linker)],
        "effectiveDateTime": rating.on.isoformat(),
        "valueInteger": rating.score,
    }
    if rating.note is not None:
        out["note"] = [{"text": rating.note}]
    return out


def _careplan_resource(
    plan: Plan, refs: References, opts: GoalOptions, linker: _Linker
) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "CarePlan"}
    if plan.source_id:
        out["id"] = plan.source_id
    out["identifier"] = [our_identifier(KIND_PLAN, plan.key, opts.namespace)]
    out["status"] = str(plan.status)
    out["intent"] = "plan"
    if plan.title is not None:
        out["title"] = plan.title
    if plan.description is not None:
        out["description"] = plan.description
    out["subject"] = refs.patient(plan.patient)
    period = {
        k: v.isoformat() for k, v in (("start", plan.start), ("end", plan.end)) if v is not None
    }
    if period:
        out["period"] = period
    out["author"] = refs.practitioner(plan.lead)
    out["contributor"] = [refs.practitioner(c) for c in plan.clinicians] + [
        refs.patient(plan.patient)
    ]
    goals = plan.all_goals()
    if goals:
        out["goal"] = [_goal_link(plan, g, linker) for g in goals]
    return out


def goal_entries(entries: Sequence[Desired]) -> list[Desired]:
    """The Goal entries of ``plan_to_fhir`` output."""
    return [e for e in entries if e.kind == KIND_GOAL]
