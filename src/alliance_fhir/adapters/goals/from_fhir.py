"""FHIR -> domain: our Goals, CarePlans and GAS Observations read back to an equal plan.

Goals written by others are tolerated: no identifier of ours -> key ``ehr-<id>``, and the
server id is kept in ``source_id`` so pushing the plan again references them directly.
EHR shapes are read as written: every R4 lifecycle and achievement status, a description as
text or coding only, targets with ``detailQuantity`` (and its comparator), ``detailRange``,
``detailString``, ``detailCodeableConcept``, ``detailRatio``, ``detailInteger``,
``detailBoolean``, ``dueDate`` or ``dueDuration``.

This is the one tolerant reader of Goals and CarePlans from a server (:func:`read_goals`,
:func:`read_plan`): what cannot be used (our identifier with a value in another shape, an
unknown status, a target the model refuses, a plan naming no clinician) becomes a
:class:`Problem` naming ``Goal/<id>`` or ``CarePlan/<id>`` and the JSON path, never an
exception out of pydantic; the other records are read on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import ValidationError

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.goals.options import (
    ACHIEVEMENT_SYSTEM,
    FRAMING_PREFIX,
    GOAL_ACCEPTANCE,
    GOAL_RELATIONSHIP,
    KIND_GAS,
    KIND_GOAL,
    KIND_PLAN,
    PRIORITY_SYSTEM,
    RELATIONSHIP_TYPE_SYSTEM,
    UCUM,
    UNSTATED_MEASURE,
    GoalOptions,
    References,
    normal_reference,
)
from alliance_fhir.adapters.identity import identifier_system, search_token
from alliance_fhir.adapters.record import record_uuid
from alliance_fhir.exceptions import InvalidInputError, Problem
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
    valid_key,
)

__all__ = [
    "goal_from_fhir",
    "is_milestone_link",
    "plan_from_fhir",
    "read_goals",
    "read_plan",
]

#: Goal model field -> the FHIR element it is read from (for problem paths).
_GOAL_PATHS = {
    "key": "identifier",
    "client_words": "description",
    "coding": "description.coding",
    "lifecycle_status": "lifecycleStatus",
    "achievement_status": "achievementStatus",
    "start": "startDate",
    "status_date": "statusDate",
    "targets": "target",
    "addresses": "addresses",
    "notes": "note",
    "strengths": "extension",
    "resources": "extension",
    "agreement": "extension",
}
_PLAN_PATHS = {"key": "identifier", "status": "status", "title": "title", "start": "period"}


def _where(res: Mapping[str, Any]) -> str:
    return f"{res.get('resourceType', 'Resource')}/{res.get('id', '?')}"


def _pydantic_problems(
    res: Mapping[str, Any], exc: ValidationError, paths: Mapping[str, str]
) -> list[Problem]:
    """pydantic's complaints as Problems on ``res`` (no values: they may be PHI)."""
    rtype = str(res.get("resourceType"))
    out = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        head = paths.get(loc[0], loc[0]) if loc else ""
        if head == "target" and len(loc) > 1 and loc[1].isdigit():
            head = f"target[{loc[1]}]"
        reason = str(err["msg"]).removeprefix("Value error, ")
        out.append(Problem(_where(res), head, reason, path=f"{rtype}.{head}" if head else rtype))
    return out


def _read(res: Mapping[str, Any], paths: Mapping[str, str], read: Any) -> tuple[Any, list[Problem]]:
    """``read()``, or the problems that kept it from reading ``res``."""
    try:
        return read(), []
    except InvalidInputError as exc:
        return None, exc.problems
    except ValidationError as exc:
        return None, _pydantic_problems(res, exc, paths)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        # An element in a shape FHIR does not allow (a server without validation stores it).
        reason = f"an element has an unexpected shape ({type(exc).__name__})"
        return None, [Problem(_where(res), "", reason, path=str(res.get("resourceType")))]


def read_goals(
    resources: Iterable[Mapping[str, Any]], options: GoalOptions | None = None
) -> tuple[list[Mapping[str, Any]], list[Problem]]:
    """The Goal resources that can be read, and the problems of those that cannot (each
    naming ``Goal/<id>`` and the JSON path). Read once per pull, so a Goal several CarePlans
    link is reported once."""
    opts = options or GoalOptions()
    usable: list[Mapping[str, Any]] = []
    problems: list[Problem] = []
    for res in resources:
        if not isinstance(res, Mapping):
            continue
        _, found = _read(res, _GOAL_PATHS, lambda r=res: _goal_parts(r, References(), opts, None))
        if found:
            problems.extend(found)
        else:
            usable.append(res)
    return usable, problems


def read_plan(
    careplan: Mapping[str, Any],
    goals: Iterable[Mapping[str, Any]],
    observations: Iterable[Mapping[str, Any]] = (),
    refs: References | None = None,
    options: GoalOptions | None = None,
) -> tuple[Plan | None, list[Problem]]:
    """:func:`plan_from_fhir`, or the problems that kept the CarePlan from being read.
    ``goals`` should have passed :func:`read_goals`."""
    goal_list = list(goals)
    obs_list = list(observations)
    plan, problems = _read(
        careplan,
        _PLAN_PATHS,
        lambda: plan_from_fhir(careplan, goal_list, obs_list, refs, options),
    )
    return (plan if isinstance(plan, Plan) else None), problems


@dataclass
class _GoalParts:
    goal: Goal
    milestone_refs: list[str]
    outcome_refs: list[str]


def goal_from_fhir(
    resource: Mapping[str, Any],
    refs: References | None = None,
    options: GoalOptions | None = None,
    *,
    patient: str | None = None,
) -> Goal:
    """One Goal resource as a domain goal, without milestones or GAS ratings (those need the
    other resources: see ``plan_from_fhir``). ``patient`` (the plan's patient key) helps tell
    the client's agreement from a clinician's when references are logical."""
    return _goal_parts(resource, refs or References(), options or GoalOptions(), patient).goal


def _goal_parts(
    res: Mapping[str, Any], refs: References, opts: GoalOptions, patient: str | None
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
        elif url == GOAL_RELATIONSHIP and is_milestone_link(ext):
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
        lifecycle_status=_lifecycle(res),
        achievement_status=_coded(res.get("achievementStatus"), ACHIEVEMENT_SYSTEM, Achievement),
        priority=_priority_of(res.get("priority")),
        agreement=agreement,
        strengths=strengths,
        resources=resources,
        start=_to_date(res.get("startDate")),
        status_date=_to_date(res.get("statusDate")),
        targets=_targets(res),
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
    options: GoalOptions | None = None,
) -> Plan:
    """A CarePlan, its Goals (milestones included) and GAS Observations as a domain plan.

    References are resolved whether written as ``Goal/<id>`` (also absolute URLs),
    ``urn:uuid:`` of our entries, or conditional ``Goal?identifier=...``. Goals the CarePlan
    names that are not among ``goals`` are left out; so are Goals not reachable from it.
    """
    refs = refs or References()
    opts = options or GoalOptions()
    if careplan.get("resourceType") != "CarePlan":
        raise InvalidInputError(Problem("CarePlan", "resourceType", "not a CarePlan resource"))
    where = f"CarePlan/{careplan.get('id', '?')}"
    subject = careplan.get("subject")
    _, patient = refs.key_of(subject) if isinstance(subject, Mapping) else (None, None)
    if patient is None:
        raise InvalidInputError(
            Problem(where, "subject", "the plan has no usable subject", path="CarePlan.subject")
        )

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
            Problem(
                where,
                "author",
                "the plan names no clinician (author or contributor)",
                path="CarePlan.author",
            )
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
        return goal_index.get(normal_reference(ref))

    milestone_ids = {
        id(m) for p in ordered for r in p.milestone_refs if (m := resolve(r)) is not None
    }

    def ratings(parts: _GoalParts) -> list[GasRating]:
        found: list[Mapping[str, Any]] = []
        for ref in parts.outcome_refs:
            obs = obs_index.get(normal_reference(ref))
            if obs is not None and obs not in found:
                found.append(obs)
        for obs in obs_index.values():
            focus = [normal_reference(f.get("reference", "")) for f in obs.get("focus") or []]
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


def _gas_from(obs: Mapping[str, Any], opts: GoalOptions) -> GasRating | None:
    codes = {(c.get("system"), c.get("code")) for c in (obs.get("code") or {}).get("coding") or []}
    if (opts.codes, "gas-rating") not in codes:
        return None
    score = obs.get("valueInteger")
    on = _to_date(obs.get("effectiveDateTime"))
    if not isinstance(score, int) or not -2 <= score <= 2 or on is None:
        return None
    note = next((n.get("text") for n in obs.get("note") or [] if n.get("text")), None)
    return GasRating(on=on, score=score, note=note)


def _names(res: Mapping[str, Any], kind: str, opts: GoalOptions) -> list[str]:
    """Every way a reference inside a plan may name ``res``."""
    rtype = str(res.get("resourceType"))
    out = []
    if res.get("id"):
        out.append(f"{rtype}/{res['id']}")
    value = _our_value(res, kind, opts)
    if value:
        out.append(record_uuid(kind, value, namespace=opts.namespace))
        out.append(f"{rtype}?identifier={search_token(kind, value, opts.namespace)}")
    return out


def _our_value(res: Mapping[str, Any], kind: str, opts: GoalOptions) -> str | None:
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


def is_milestone_link(ext: Mapping[str, Any]) -> bool:
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


def _lifecycle(res: Mapping[str, Any]) -> Lifecycle:
    value = res.get("lifecycleStatus")
    if isinstance(value, str) and value in Lifecycle._value2member_map_:
        return Lifecycle(value)
    raise InvalidInputError(
        Problem(
            _where(res),
            "lifecycleStatus",
            f"unknown lifecycle status {value!r}",
            path="Goal.lifecycleStatus",
        )
    )


def _targets(res: Mapping[str, Any]) -> list[Target]:
    out: list[Target] = []
    problems: list[Problem] = []
    for n, raw in enumerate(res.get("target") or []):
        try:
            target = _target_from(raw)
        except ValidationError as exc:
            reasons = "; ".join(
                str(e["msg"]).removeprefix("Value error, ") for e in exc.errors(include_url=False)
            )
            problems.append(Problem(_where(res), f"target[{n}]", reasons, path=f"Goal.target[{n}]"))
            continue
        if target is not None:
            out.append(target)
    if problems:
        raise InvalidInputError(problems)
    return out


def _amount(q: Any) -> str | None:
    """A Quantity or Duration as words (``12 wk``), as the EHR wrote it."""
    if not isinstance(q, Mapping) or q.get("value") is None:
        return None
    unit = q.get("unit") or q.get("code") or ""
    return f"{q.get('comparator') or ''}{_plain(q['value'])} {unit}".strip()


def _plain(value: Any) -> str:
    text = str(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


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
    fields: dict[str, Any] = {
        "measure": measure,
        "due": _to_date(t.get("dueDate")),
        "due_after": _amount(t.get("dueDuration")),
    }
    if "detailQuantity" in t:
        q = t["detailQuantity"]
        fields.update(
            value=q.get("value"),
            unit=q.get("unit"),
            unit_code=_ucum(q),
            comparator=q.get("comparator"),
        )
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
    elif "detailRatio" in t:
        ratio = t["detailRatio"]
        num, den = _amount(ratio.get("numerator")), _amount(ratio.get("denominator"))
        fields["detail"] = f"{num or '?'} per {den or '?'}"
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
