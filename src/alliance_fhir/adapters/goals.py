"""Goal plans <-> FHIR R4 ``Goal`` + ``CarePlan`` + goal-attainment ``Observation``.

Domain -> FHIR: ``plan_to_fhir`` gives a list of ``Entry`` (kind, key, resource dict, a uuid5
derived from our identifier for ``urn:uuid:`` fullUrls). References between resources of one
plan (CarePlan -> Goal, Goal -> milestone Goal, Goal -> Observation, Observation -> Goal) are
written as ``urn:uuid:`` (``links="urn"``, for a transaction bundle holding every entry) or
as conditional references ``Goal?identifier=system|value`` (``links="conditional"``). A goal
already known on the server (``source_id``) is always referenced as ``Goal/<id>``.

Where the domain lives in FHIR:

====================  ==========================================================
client_words          Goal.description.text (``coding`` -> description.coding)
clinician_framing     Goal.note marked with our ``goal-note-kind`` extension
                      (``clinician-framing``), text prefixed "Clinician's framing: "
progress notes        Goal.note marked ``progress``, ``time`` = the note's date
proposed_by           Goal.expressedBy (client/both -> Patient, clinician -> lead
                      Practitioner) + our ``goal-proposed-by`` extension (code)
agreement             one ``goal-acceptance`` extension per party
priority              Goal.priority (goal-priority: the agreed priority)
strengths/resources   our ``goal-strength`` / ``goal-resource`` extensions (valueString)
milestones            own Goals, linked from the parent by ``goal-relationship``
                      (type ``milestone``)
GAS ratings           Observations (code ``gas-rating``), Goal.outcomeReference
====================  ==========================================================

FHIR -> domain: ``plan_from_fhir`` and ``goal_from_fhir`` read our resources back to an equal
plan, and tolerate Goals written by others (no identifier of ours -> key ``ehr-<id>``; the
server id is kept in ``source_id``). ``merge_onto_server`` lays the fields we own onto the
server's current version and keeps everything else.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.identity import (
    DEFAULT_CANONICAL_BASE,
    DEFAULT_NAMESPACE,
    identifier_system,
    our_identifier,
    search_token,
)
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.goals._gas import gas_summaries
from alliance_fhir.goals._model import (
    Acceptance,
    Achievement,
    Addressed,
    Agreement,
    Concept,
    GasRating,
    Goal,
    GoalCoding,
    Lifecycle,
    Party,
    Plan,
    PlanStatus,
    Priority,
    ProgressNote,
    Stance,
    Target,
    split_identifier,
    valid_key,
)

GOAL_ACCEPTANCE = "http://hl7.org/fhir/StructureDefinition/goal-acceptance"
GOAL_RELATIONSHIP = "http://hl7.org/fhir/StructureDefinition/goal-relationship"
RELATIONSHIP_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-relationship-type"
ACHIEVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-achievement"
PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-priority"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"

KIND_GOAL = "goal"
#: Measure text used for an EHR target that gives a detail but no measure.
UNSTATED_MEASURE = "Measure not stated"
KIND_PLAN = "careplan"
KIND_GAS = "gas-rating"
KIND_GAS_SUMMARY = "gas-summary"

FRAMING_PREFIX = "Clinician's framing: "

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

Links = Literal["urn", "conditional"]
Ref = dict[str, Any]


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class References:
    """How to point at the people of a plan, supplied by the sync layer.

    ``patients`` maps a patient key (``system|value``) and ``practitioners`` a clinician key
    to a FHIR Reference dict: ``{"reference": "Patient/123"}`` once resolved on the server,
    or a conditional/logical one. A key missing from the map becomes a logical reference by
    identifier (``{"type": "Patient", "identifier": {...}}``), or ``{"reference": key}`` when
    the key is itself a literal reference (``Practitioner/17``).
    """

    patients: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    practitioners: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def patient(self, key: str) -> Ref:
        return _party_ref(key, self.patients, "Patient")

    def practitioner(self, key: str) -> Ref:
        return _party_ref(key, self.practitioners, "Practitioner")

    def key_of(self, ref: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """``(resource type or None, party key)`` for a Reference; ``(None, None)`` if opaque."""
        for known_type, table in (
            ("Patient", self.patients),
            ("Practitioner", self.practitioners),
        ):
            for key, known in table.items():
                if _same_ref(known, ref):
                    return known_type, key
        ident = ref.get("identifier")
        if isinstance(ident, Mapping) and ident.get("system") and ident.get("value"):
            rtype = ref.get("type")
            return (str(rtype) if rtype else None), f"{ident['system']}|{ident['value']}"
        literal = _literal(ref.get("reference"))
        if literal is not None:
            return literal.split("/")[0], literal
        return None, None


@dataclass(frozen=True)
class Options:
    """Namespaces and the way internal links are written."""

    namespace: str = DEFAULT_NAMESPACE
    canonical_base: str = DEFAULT_CANONICAL_BASE
    links: Links = "urn"
    gas_summary: bool = True

    def ext(self, name: str) -> str:
        return f"{self.canonical_base.rstrip('/')}/StructureDefinition/{name}"

    @property
    def codes(self) -> str:
        return f"{self.canonical_base.rstrip('/')}/CodeSystem/alliance-fhir-codes"


@dataclass(frozen=True)
class Entry:
    """One resource of a plan, ready for a bundle."""

    kind: str
    key: str
    resource: dict[str, Any]
    uuid: str
    token: str
    source_id: str | None = None

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    @property
    def full_url(self) -> str:
        return f"urn:uuid:{self.uuid}"

    @property
    def conditional(self) -> str:
        """``Goal?identifier=system|value``: for conditional create/update and references."""
        return f"{self.resource_type}?identifier={self.token}"


def entry_uuid(kind: str, key: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The stable uuid5 behind an entry's ``urn:uuid:`` fullUrl."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, search_token(kind, key, namespace)))


def goal_identifier_value(plan_key: str, goal_key: str) -> str:
    return f"{plan_key}/{goal_key}"


# --------------------------------------------------------------------------- domain -> FHIR


@dataclass
class _Linker:
    opts: Options

    def link(self, kind: str, key: str, rtype: str, source_id: str | None = None) -> Ref:
        if source_id:
            return {"reference": f"{rtype}/{source_id}"}
        if self.opts.links == "urn":
            return {"reference": f"urn:uuid:{entry_uuid(kind, key, self.opts.namespace)}"}
        return {"reference": f"{rtype}?identifier={search_token(kind, key, self.opts.namespace)}"}


def plan_to_fhir(
    plan: Plan, refs: References | None = None, options: Options | None = None
) -> list[Entry]:
    """Every resource of ``plan``: Goals (parents before milestones), GAS Observations,
    GAS summaries (one per rating day), then the CarePlan. Each is validated (R4B)."""
    refs = refs or References()
    opts = options or Options()
    linker = _Linker(opts)
    entries: list[Entry] = []

    def add(kind: str, key: str, resource: dict[str, Any], source_id: str | None = None) -> None:
        fhirjson.validate(resource, source=f"{kind} {key}")
        entries.append(
            Entry(
                kind,
                key,
                resource,
                entry_uuid(kind, key, opts.namespace),
                search_token(kind, key, opts.namespace),
                source_id,
            )
        )

    observations: list[tuple[str, dict[str, Any]]] = []
    for goal in plan.all_goals():
        add(
            KIND_GOAL,
            goal_identifier_value(plan.key, goal.key),
            _goal_resource(plan, goal, refs, opts, linker),
            goal.source_id,
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
    add(KIND_PLAN, plan.key, _careplan_resource(plan, refs, opts, linker), plan.source_id)
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


def _note_kind(opts: Options, kind: str) -> list[dict[str, Any]]:
    return [{"url": opts.ext("goal-note-kind"), "valueCode": kind}]


def _goal_resource(
    plan: Plan, goal: Goal, refs: References, opts: Options, linker: _Linker
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
    opts: Options,
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
    plan: Plan, refs: References, opts: Options, linker: _Linker
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


# --------------------------------------------------------------------------- FHIR -> domain


@dataclass
class _GoalParts:
    goal: Goal
    milestone_refs: list[str]
    outcome_refs: list[str]


def goal_from_fhir(
    resource: Mapping[str, Any],
    refs: References | None = None,
    options: Options | None = None,
    *,
    patient: str | None = None,
) -> Goal:
    """One Goal resource as a domain goal, without milestones or GAS ratings (those need the
    other resources: see ``plan_from_fhir``). ``patient`` (the plan's patient key) helps tell
    the client's agreement from a clinician's when references are logical."""
    return _goal_parts(resource, refs or References(), options or Options(), patient).goal


def _goal_parts(
    res: Mapping[str, Any], refs: References, opts: Options, patient: str | None
) -> _GoalParts:
    if res.get("resourceType") != "Goal":
        raise InvalidInputError(Problem("Goal", "resourceType", "not a Goal resource"))
    value = _our_value(res, KIND_GOAL, opts)
    key = value.partition("/")[2] or value if value else _foreign_key(res)

    def is_client(ref: Mapping[str, Any]) -> bool:
        rtype, pkey = refs.key_of(ref)
        if patient is not None and pkey == patient:
            return True
        return rtype in ("Patient", "RelatedPerson")

    description = res.get("description") or {}
    codings = [c for c in description.get("coding") or [] if c.get("code")]
    words = description.get("text") or next(
        (c.get("display") or c["code"] for c in codings), "(no description recorded)"
    )

    client: Acceptance | None = None
    clinician: Acceptance | None = None
    milestone_refs: list[str] = []
    proposed: Party | None = None
    strengths: list[str] = []
    resources: list[str] = []
    for ext in res.get("extension") or []:
        url = ext.get("url")
        if url == GOAL_ACCEPTANCE:
            subs = _subs(ext)
            who = subs.get("individual", {}).get("valueReference") or {}
            status = str(subs.get("status", {}).get("valueCode"))
            if status not in Stance._value2member_map_:
                continue
            prio = _priority_of(subs.get("priority", {}).get("valueCodeableConcept"))
            if is_client(who):
                client = client or Acceptance(status=Stance(status), priority=prio)
            elif clinician is None:
                _, pkey = refs.key_of(who)
                clinician = Acceptance(status=Stance(status), priority=prio, clinician=pkey)
        elif url == GOAL_RELATIONSHIP and _is_milestone_link(ext):
            target = _subs(ext).get("target", {}).get("valueReference") or {}
            if target.get("reference"):
                milestone_refs.append(str(target["reference"]))
        elif url == opts.ext("goal-proposed-by"):
            code = ext.get("valueCode")
            proposed = Party(code) if code in Party._value2member_map_ else None
        elif url == opts.ext("goal-strength") and ext.get("valueString"):
            strengths.append(ext["valueString"])
        elif url == opts.ext("goal-resource") and ext.get("valueString"):
            resources.append(ext["valueString"])
    if proposed is None and res.get("expressedBy"):
        proposed = Party.CLIENT if is_client(res["expressedBy"]) else Party.CLINICIAN

    framing: str | None = None
    notes: list[ProgressNote] = []
    for note in res.get("note") or []:
        text = note.get("text")
        if not text:
            continue
        kinds = {
            e.get("valueCode")
            for e in note.get("extension") or []
            if e.get("url") == opts.ext("goal-note-kind")
        }
        if "clinician-framing" in kinds or (not kinds and text.startswith(FRAMING_PREFIX)):
            framing = text.removeprefix(FRAMING_PREFIX)
        else:
            notes.append(ProgressNote(on=_note_time(note.get("time")), text=text))

    agreement = Agreement(client=client, clinician=clinician) if client or clinician else None
    goal = Goal(
        key=key,
        client_words=words,
        clinician_framing=framing,
        coding=[
            GoalCoding(system=c.get("system"), code=c["code"], display=c.get("display"))
            for c in codings
        ],
        proposed_by=proposed,
        lifecycle_status=_lifecycle(res.get("lifecycleStatus")),
        achievement_status=_coded(res.get("achievementStatus"), ACHIEVEMENT_SYSTEM, Achievement),
        priority=_priority_of(res.get("priority")),
        agreement=agreement,
        strengths=strengths,
        resources=resources,
        start=_to_date(res.get("startDate")),
        status_date=_to_date(res.get("statusDate")),
        targets=[t for t in (_target_from(t) for t in res.get("target") or []) if t is not None],
        addresses=[
            Addressed(text=a.get("display"), reference=a.get("reference"))
            for a in res.get("addresses") or []
            if a.get("display") or a.get("reference")
        ],
        notes=notes,
        source_id=res.get("id"),
    )
    outcome_refs = [
        str(r["reference"]) for r in res.get("outcomeReference") or [] if r.get("reference")
    ]
    return _GoalParts(goal, milestone_refs, outcome_refs)


def plan_from_fhir(
    careplan: Mapping[str, Any],
    goals: Iterable[Mapping[str, Any]],
    observations: Iterable[Mapping[str, Any]] = (),
    refs: References | None = None,
    options: Options | None = None,
) -> Plan:
    """A CarePlan, its Goals (milestones included) and GAS Observations as a domain plan.

    References are resolved whether written as ``Goal/<id>`` (also absolute URLs),
    ``urn:uuid:`` of our entries, or conditional ``Goal?identifier=...``. Goals the CarePlan
    names that are not among ``goals`` are left out; so are Goals not reachable from it.
    """
    refs = refs or References()
    opts = options or Options()
    if careplan.get("resourceType") != "CarePlan":
        raise InvalidInputError(Problem("CarePlan", "resourceType", "not a CarePlan resource"))
    where = f"CarePlan/{careplan.get('id', '?')}"
    subject = careplan.get("subject")
    _, patient = refs.key_of(subject) if isinstance(subject, Mapping) else (None, None)
    if patient is None:
        raise InvalidInputError(Problem(where, "subject", "the plan has no usable subject"))

    clinicians: list[str] = []
    people = [careplan.get("author"), *(careplan.get("contributor") or [])]
    for ref in people:
        if not isinstance(ref, Mapping):
            continue
        rtype, pkey = refs.key_of(ref)
        if pkey is None or pkey == patient or rtype in ("Patient", "RelatedPerson"):
            continue
        if pkey not in clinicians:
            clinicians.append(pkey)
    if not clinicians:
        raise InvalidInputError(
            Problem(where, "author", "the plan names no clinician (author or contributor)")
        )

    goal_index: dict[str, _GoalParts] = {}
    ordered: list[_GoalParts] = []
    for res in goals:
        parts = _goal_parts(res, refs, opts, patient)
        ordered.append(parts)
        for name in _names(res, KIND_GOAL, opts):
            goal_index[name] = parts
    obs_index: dict[str, Mapping[str, Any]] = {}
    for res in observations:
        for name in _names(res, KIND_GAS, opts):
            obs_index[name] = res

    def resolve(ref: str) -> _GoalParts | None:
        return goal_index.get(_normal(ref))

    milestone_ids = {
        id(m) for p in ordered for r in p.milestone_refs if (m := resolve(r)) is not None
    }

    def ratings(parts: _GoalParts) -> list[GasRating]:
        found: list[Mapping[str, Any]] = []
        for ref in parts.outcome_refs:
            obs = obs_index.get(_normal(ref))
            if obs is not None and obs not in found:
                found.append(obs)
        for obs in obs_index.values():
            focus = [_normal(f.get("reference", "")) for f in obs.get("focus") or []]
            if any(goal_index.get(f) is parts for f in focus) and obs not in found:
                found.append(obs)
        out: list[GasRating] = []
        for obs in found:
            rating = _gas_from(obs, opts)
            if rating is not None and all(r.on != rating.on for r in out):
                out.append(rating)
        return out

    def build(parts: _GoalParts, seen: frozenset[int]) -> Goal:
        kids = []
        for ref in parts.milestone_refs:
            child = resolve(ref)
            if child is not None and id(child) not in seen:
                kids.append(build(child, seen | {id(child)}))
        return parts.goal.model_copy(update={"milestones": kids, "gas": ratings(parts)})

    tops: list[Goal] = []
    used: set[int] = set()
    for ref in careplan.get("goal") or []:
        top = resolve(str(ref.get("reference", "")))
        if top is None or id(top) in milestone_ids or id(top) in used:
            continue
        used.add(id(top))
        tops.append(build(top, frozenset({id(top)})))

    period = careplan.get("period") or {}
    value = _our_value(careplan, KIND_PLAN, opts)
    return Plan.model_validate(
        {
            "key": value or _foreign_key(careplan),
            "patient": patient,
            "clinicians": clinicians,
            "status": careplan.get("status") or PlanStatus.UNKNOWN,
            "start": _to_date(period.get("start")),
            "end": _to_date(period.get("end")),
            "title": careplan.get("title"),
            "description": careplan.get("description"),
            "source_id": careplan.get("id"),
            "goals": tops,
        }
    )


def _gas_from(obs: Mapping[str, Any], opts: Options) -> GasRating | None:
    codes = {(c.get("system"), c.get("code")) for c in (obs.get("code") or {}).get("coding") or []}
    if (opts.codes, "gas-rating") not in codes:
        return None
    score = obs.get("valueInteger")
    on = _to_date(obs.get("effectiveDateTime"))
    if not isinstance(score, int) or not -2 <= score <= 2 or on is None:
        return None
    note = next((n.get("text") for n in obs.get("note") or [] if n.get("text")), None)
    return GasRating(on=on, score=score, note=note)


def _names(res: Mapping[str, Any], kind: str, opts: Options) -> list[str]:
    """Every way a reference inside a plan may name ``res``."""
    rtype = str(res.get("resourceType"))
    out = []
    if res.get("id"):
        out.append(f"{rtype}/{res['id']}")
    value = _our_value(res, kind, opts)
    if value:
        out.append(f"urn:uuid:{entry_uuid(kind, value, opts.namespace)}")
        out.append(f"{rtype}?identifier={search_token(kind, value, opts.namespace)}")
    return out


_LITERAL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[^/]+)?$")


def _normal(ref: str) -> str:
    """``http://x/fhir/Goal/7/_history/2`` -> ``Goal/7``; other forms unchanged."""
    if ref.startswith(("urn:", "#")) or "?" in ref:
        return ref
    match = _LITERAL.search(ref)
    return f"{match.group(1)}/{match.group(2)}" if match else ref


def _literal(ref: Any) -> str | None:
    if not isinstance(ref, str) or ref.startswith(("urn:", "#")) or "?" in ref:
        return None
    normal = _normal(ref)
    return normal if _LITERAL.fullmatch(normal) else None


def _our_value(res: Mapping[str, Any], kind: str, opts: Options) -> str | None:
    system = identifier_system(kind, opts.namespace)
    for ident in res.get("identifier") or []:
        if ident.get("system") == system and ident.get("value"):
            return str(ident["value"])
    return None


def _foreign_key(res: Mapping[str, Any]) -> str:
    rid = str(res.get("id") or "")
    if rid and valid_key(f"ehr-{rid}"):
        return f"ehr-{rid}"
    return f"ehr-{fhirjson.content_hash(dict(res))[:16]}"


def _subs(ext: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for sub in ext.get("extension") or []:
        out.setdefault(str(sub.get("url")), sub)
    return out


def _is_milestone_link(ext: Mapping[str, Any]) -> bool:
    kind = _subs(ext).get("type", {}).get("valueCodeableConcept") or {}
    return any(
        c.get("system") == RELATIONSHIP_TYPE_SYSTEM and c.get("code") == "milestone"
        for c in kind.get("coding") or []
    )


def _coded(cc: Any, system: str, enum: type[Achievement]) -> Achievement | None:
    if not isinstance(cc, Mapping):
        return None
    for coding in cc.get("coding") or []:
        if coding.get("system") == system and coding.get("code") in enum._value2member_map_:
            return enum(coding["code"])
    return None


def _priority_of(cc: Any) -> Priority | None:
    if not isinstance(cc, Mapping):
        return None
    for coding in cc.get("coding") or []:
        code = str(coding.get("code", "")).removesuffix("-priority")
        if coding.get("system") == PRIORITY_SYSTEM and code in Priority._value2member_map_:
            return Priority(code)
    return None


def _lifecycle(value: Any) -> Lifecycle:
    if value in Lifecycle._value2member_map_:
        return Lifecycle(value)
    raise InvalidInputError(
        Problem("Goal", "lifecycleStatus", f"unknown lifecycle status {value!r}")
    )


def _target_from(t: Mapping[str, Any]) -> Target | None:
    measure = None
    m = t.get("measure") or {}
    coding: Mapping[str, Any] = next(iter(m.get("coding") or []), {})
    text = m.get("text") or coding.get("display") or coding.get("code")
    if text:
        measure = Concept(text=text, code=coding.get("code"), system=coding.get("system"))
    has_detail = any(k.startswith("detail") for k in t)
    if measure is None and has_detail:
        # An EHR may send a detail without the measure FHIR's gol-1 requires; keep the detail
        # and say plainly that the measure was not stated (a later update makes it valid).
        measure = Concept(text=UNSTATED_MEASURE)
    fields: dict[str, Any] = {"measure": measure, "due": _to_date(t.get("dueDate"))}
    if "detailQuantity" in t:
        q = t["detailQuantity"]
        fields.update(value=q.get("value"), unit=q.get("unit"), unit_code=_ucum(q))
    elif "detailRange" in t:
        low, high = t["detailRange"].get("low") or {}, t["detailRange"].get("high") or {}
        fields.update(
            low=low.get("value"),
            high=high.get("value"),
            unit=low.get("unit") or high.get("unit"),
            unit_code=_ucum(low) or _ucum(high),
        )
    elif "detailString" in t:
        fields["detail"] = t["detailString"]
    elif "detailInteger" in t:
        fields["value"] = t["detailInteger"]
    elif "detailBoolean" in t:
        fields["detail"] = "yes" if t["detailBoolean"] else "no"
    elif "detailCodeableConcept" in t:
        cc = t["detailCodeableConcept"]
        first: Mapping[str, Any] = next(iter(cc.get("coding") or []), {})
        fields["detail"] = cc.get("text") or first.get("display") or first.get("code")
    if fields.get("unit_code") and not fields.get("unit"):
        fields["unit"] = fields["unit_code"]
    if all(v is None for v in fields.values()):
        return None
    return Target.model_validate(fields)


def _ucum(q: Mapping[str, Any]) -> str | None:
    code = q.get("code")
    return str(code) if code and q.get("system") == UCUM else None


def _to_date(value: Any) -> date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _note_time(value: Any) -> date | datetime | None:
    if not isinstance(value, str):
        return None
    if len(value) > 10:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return _to_date(value)
        return moment if moment.tzinfo is not None else moment.date()
    return _to_date(value)


def _party_ref(key: str, table: Mapping[str, Mapping[str, Any]], rtype: str) -> Ref:
    if key in table:
        return dict(table[key])
    ident = split_identifier(key)
    if ident is None:
        return {"reference": key}
    return {"type": rtype, "identifier": {"system": ident[0], "value": ident[1]}}


def _same_ref(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("reference") is not None or b.get("reference") is not None:
        ra, rb = a.get("reference"), b.get("reference")
        return ra is not None and rb is not None and _normal(str(ra)) == _normal(str(rb))
    return a.get("identifier") is not None and a.get("identifier") == b.get("identifier")


# --------------------------------------------------------------------------- merge


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ORDER: dict[str, tuple[str, ...]] = {
    "Goal": _words(
        "resourceType id meta implicitRules language text contained extension "
        "modifierExtension identifier lifecycleStatus achievementStatus category priority "
        "description subject startDate startCodeableConcept target statusDate statusReason "
        "expressedBy addresses note outcomeCode outcomeReference"
    ),
    "CarePlan": _words(
        "resourceType id meta implicitRules language text contained extension "
        "modifierExtension identifier instantiatesCanonical instantiatesUri basedOn replaces "
        "partOf status intent category title description subject encounter period created "
        "author contributor careTeam addresses supportingInfo goal activity note"
    ),
    "Observation": _words(
        "resourceType id meta implicitRules language text contained extension "
        "modifierExtension identifier basedOn partOf status category code subject focus "
        "encounter effectiveDateTime effectivePeriod effectiveTiming effectiveInstant issued "
        "performer valueQuantity valueCodeableConcept valueString valueBoolean valueInteger "
        "valueRange valueRatio valueSampledData valueTime valueDateTime valuePeriod "
        "dataAbsentReason interpretation note bodySite method specimen device referenceRange "
        "hasMember derivedFrom component"
    ),
}

#: Elements whose value is ours outright (absent in ours -> removed from the server's).
OWNED: dict[str, tuple[str, ...]] = {
    "Goal": _words(
        "lifecycleStatus achievementStatus priority description subject startDate target "
        "statusDate expressedBy addresses outcomeReference"
    ),
    "CarePlan": _words("status intent title description subject period author contributor goal"),
    "Observation": _words("status category code subject focus note derivedFrom"),
}
_CHOICES: dict[str, tuple[tuple[str, ...], ...]] = {
    "Goal": (("startDate", "startCodeableConcept"),),
    "Observation": (
        tuple(k for k in _ORDER["Observation"] if k.startswith("effective")),
        tuple(k for k in _ORDER["Observation"] if k.startswith("value")),
    ),
}


def merge_onto_server(
    server_resource: Mapping[str, Any],
    ours: Mapping[str, Any],
    options: Options | None = None,
) -> dict[str, Any]:
    """The server's current ``server_resource`` with the fields we own taken from ``ours``.

    Kept from the server: ``id``, ``meta``, ``text``, every element we do not model,
    identifiers of other systems, extensions with URLs we do not own (and goal-relationship
    links other than milestones), and notes that are not ours (a server note with the same
    text and time as one of ours counts as ours). Replaced: the elements listed in ``OWNED``,
    our identifier, our extensions, our notes. The result is validated and in FHIR order;
    merging the result again with the same ``ours`` changes nothing.
    """
    opts = options or Options()
    rtype = str(ours.get("resourceType"))
    if server_resource.get("resourceType") != rtype or rtype not in OWNED:
        raise InvalidInputError(
            Problem(
                f"{rtype}/{server_resource.get('id', '?')}",
                "resourceType",
                f"cannot merge a {server_resource.get('resourceType')} with a {rtype}",
            )
        )
    merged: dict[str, Any] = dict(server_resource)
    for name in OWNED[rtype]:
        merged.pop(name, None)
        merged.pop(f"_{name}", None)
        if name in ours:
            merged[name] = ours[name]
    for group in _CHOICES.get(rtype, ()):
        if any(k in ours for k in group):
            for k in group:
                merged.pop(k, None)
                merged.pop(f"_{k}", None)
            for k in group:
                if k in ours:
                    merged[k] = ours[k]

    ours_ids = list(ours.get("identifier") or [])
    our_systems = {i.get("system") for i in ours_ids}
    foreign_ids = [
        i for i in server_resource.get("identifier") or [] if i.get("system") not in our_systems
    ]
    _set(merged, "identifier", foreign_ids + ours_ids)

    owned_urls = {
        GOAL_ACCEPTANCE,
        opts.ext("goal-proposed-by"),
        opts.ext("goal-strength"),
        opts.ext("goal-resource"),
    }
    foreign_ext = [
        e
        for e in server_resource.get("extension") or []
        if e.get("url") not in owned_urls
        and not (e.get("url") == GOAL_RELATIONSHIP and _is_milestone_link(e))
    ]
    _set(merged, "extension", list(ours.get("extension") or []) + foreign_ext)

    if rtype == "Goal":
        our_notes = list(ours.get("note") or [])
        seen = {(n.get("time"), n.get("text")) for n in our_notes}
        kind_url = opts.ext("goal-note-kind")
        foreign_notes = [
            n
            for n in server_resource.get("note") or []
            if not any(e.get("url") == kind_url for e in n.get("extension") or [])
            and (n.get("time"), n.get("text")) not in seen
            and not str(n.get("text", "")).startswith(FRAMING_PREFIX)
        ]
        _set(merged, "note", our_notes + foreign_notes)

    result = _ordered(rtype, merged)
    return fhirjson.validate(result, source=f"{rtype}/{result.get('id', '?')}")


def _set(target: dict[str, Any], name: str, value: list[Any]) -> None:
    if value:
        target[name] = value
    else:
        target.pop(name, None)


def _ordered(rtype: str, resource: Mapping[str, Any]) -> dict[str, Any]:
    order = _ORDER[rtype]
    rank = {name: i for i, name in enumerate(order)}

    def sort_key(item: tuple[int, str]) -> tuple[float, int, int]:
        index, name = item
        base = name[1:] if name.startswith("_") else name
        return (rank.get(base, len(order)), 1 if name.startswith("_") else 0, index)

    names = sorted(enumerate(resource), key=sort_key)
    return {name: resource[name] for _, name in names}


def goal_entries(entries: Sequence[Entry]) -> list[Entry]:
    """The Goal entries of ``plan_to_fhir`` output."""
    return [e for e in entries if e.kind == KIND_GOAL]
