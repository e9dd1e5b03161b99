"""Assessment -> FHIR R4 ``QuestionnaireResponse`` (the answers) + ``Observation`` (the scores).

References
    Resources point at the patient and clinician, which live on the EHR. How a business
    identifier becomes a Reference is the caller's business (the sync layer searches the server),
    so every function takes ``refs``: either a mapping from ``(system, value)`` to a Reference
    dict, or a callable ``(system, value) -> Reference dict``. :func:`logical_ref` is a ready
    callable giving logical references (``{"type": ..., "identifier": {...}}``) for files
    that are not sent to a server that insists on resolvable references.

Both resources carry our identifier with the assessment key (kinds ``assessment`` and
``score``), so writes are conditional and repeatable. Output is byte-stable for equal input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.codesystem import (
    answer_coding,
    band_coding,
    below_cutoff_coding,
    score_coding,
)
from alliance_fhir.adapters.identity import (
    DEFAULT_CANONICAL_BASE,
    DEFAULT_NAMESPACE,
    our_identifier,
)
from alliance_fhir.adapters.questionnaire import number, questionnaire_canonical
from alliance_fhir.assessments.check import prepare
from alliance_fhir.assessments.model import Assessment, Identifier
from alliance_fhir.exceptions import InvalidInputError, ScoringError
from alliance_fhir.instruments.schema import Instrument, ScoreDef
from alliance_fhir.instruments.scoring import Scores, ScoreValue

__all__ = [
    "RefResolver",
    "Refs",
    "assessment_resources",
    "logical_ref",
    "questionnaire_response",
    "score_observation",
]

#: ``(system, value)`` -> a FHIR Reference dict.
RefResolver = Callable[[str, str], Mapping[str, Any]]
Refs = Mapping[tuple[str, str], Mapping[str, Any]] | RefResolver

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
UCUM = "http://unitsofmeasure.org"

_OBSERVATION_STATUS = {"completed": "final", "amended": "amended", "in-progress": "preliminary"}


def logical_ref(kind: Literal["Patient", "Practitioner"]) -> RefResolver:
    """A resolver giving logical references by identifier, e.g. ``logical_ref("Patient")``."""

    def resolve(system: str, value: str) -> Mapping[str, Any]:
        return {"type": kind, "identifier": {"system": system, "value": value}}

    return resolve


def _ref(refs: Refs, who: Identifier, assessment: Assessment, field: str) -> dict[str, Any]:
    if callable(refs):
        found: Mapping[str, Any] | None = refs(who.system, who.value)
    else:
        found = refs.get((who.system, who.value))
    if not found:
        raise InvalidInputError(
            assessment.problem(
                field, f"no {field} with identifier system {who.system} is known to the server"
            )
        )
    return dict(found)


def _author_refs(
    assessment: Assessment, instrument: Instrument, refs: Refs
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(subject, clinician) References; the clinician only for a clinician-completed form."""
    subject = _ref(refs, assessment.patient, assessment, "patient")
    if instrument.respondent != "clinician":
        return subject, None
    if assessment.practitioner is None:
        raise InvalidInputError(
            assessment.problem("practitioner", f"{instrument.id} is completed by a clinician")
        )
    return subject, _ref(refs, assessment.practitioner, assessment, "practitioner")


def questionnaire_response(
    assessment: Assessment,
    instrument: Instrument,
    *,
    refs: Refs,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    namespace: str = DEFAULT_NAMESPACE,
    prepared: bool = False,
    validation: fhirjson.Validation = "full",
) -> dict[str, Any]:
    """The QuestionnaireResponse of ``assessment`` (answers checked against ``instrument``).

    The client form is authored by, and sourced from, the patient; the clinician form is
    authored by the clinician. Raises InvalidInputError for answers that fail the checks.
    ``prepared`` says the caller already ran ``prepare`` (the checks cost a tenth of mapping).
    ``validation`` is how the result is validated (``fhirjson.Validation``; same output).
    """
    if not prepared:
        assessment = prepare(instrument, assessment)
    subject, clinician = _author_refs(assessment, instrument, refs)
    items: list[dict[str, Any]] = []
    for item in instrument.items:
        if item.link_id not in assessment.answers:
            continue
        value = assessment.answers[item.link_id]
        answer: dict[str, Any]
        if item.type == "choice":
            assert item.scale is not None  # guaranteed by Item's validator
            scale = instrument.scale(item.scale)
            point = next(p for p in scale.points if p.code == value)
            answer = {"valueCoding": answer_coding(instrument, scale, point, canonical_base)}
        elif item.type == "decimal":
            assert not isinstance(value, str)  # prepare() made it a number
            answer = {"valueDecimal": number(value)}
        else:
            answer = {"valueString": str(value)}
        items.append({"linkId": item.link_id, "text": item.label, "answer": [answer]})
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "identifier": our_identifier("assessment", assessment.key, namespace),
        "questionnaire": questionnaire_canonical(instrument, canonical_base),
        "status": assessment.status,
        "subject": subject,
        "authored": assessment.authored_fhir(),
    }
    if instrument.respondent == "client":
        resource["author"] = subject
        resource["source"] = subject
    else:
        assert clinician is not None  # _author_refs insists
        resource["author"] = clinician
    if items:
        resource["item"] = items
    return fhirjson.validate(resource, source=assessment.where, mode=validation)


def _quantity(value: float, score: ScoreDef) -> dict[str, Any]:
    rounded = round(value, score.decimals)
    return {
        "value": int(rounded) if score.decimals == 0 else number(rounded),
        "unit": "{score}",
        "system": UCUM,
        "code": "{score}",
    }


def _component(instrument: Instrument, sdef: ScoreDef, sv: ScoreValue, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {"code": {"coding": [score_coding(instrument, sdef, base)]}}
    if sv.value is None:
        out["dataAbsentReason"] = {
            "coding": [{"system": DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"}],
            "text": sv.reason or "could not be computed",
        }
    else:
        out["valueQuantity"] = _quantity(sv.value, sdef)
    return out


def _proration_note(sv: ScoreValue) -> str:
    return (
        f"{sv.label}: prorated, {sv.answered} of {sv.expected} items answered; missing answers "
        "were replaced by the mean of the answered items."
    )


def score_observation(
    assessment: Assessment,
    instrument: Instrument,
    scores: Scores,
    *,
    refs: Refs,
    qr_ref: Mapping[str, Any] | str | None = None,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    namespace: str = DEFAULT_NAMESPACE,
    validation: fhirjson.Validation = "full",
) -> dict[str, Any]:
    """The score Observation of ``assessment``.

    ``qr_ref`` is what ``derivedFrom`` points at: a Reference dict, or a reference string
    (``urn:uuid:...`` inside a transaction, ``QuestionnaireResponse/12``); by default a
    logical reference by our assessment identifier. Raises ScoringError (saying why) when the
    total cannot be computed: no Observation is made for a score we do not have.
    """
    if scores.instrument_id != instrument.id:
        raise ValueError(f"scores are for {scores.instrument_id}, not {instrument.id}")
    total = scores.total
    if total.value is None:
        raise ScoringError(
            assessment.problem(
                "answers",
                f"{instrument.id} total not computed: {total.reason or 'no reason given'}",
            )
        )
    subject, clinician = _author_refs(assessment, instrument, refs)
    sdefs = {s.id: s for s in instrument.scoring.subscales}
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [our_identifier("score", assessment.key, namespace)],
        "status": _OBSERVATION_STATUS[assessment.status],
        "category": [
            {"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}
        ],
        "code": {
            "coding": [score_coding(instrument, instrument.scoring.total, canonical_base)],
            "text": f"{instrument.title}: {total.label}",
        },
        "subject": subject,
        "effectiveDateTime": assessment.authored_fhir(),
    }
    performer = subject if instrument.respondent == "client" else clinician
    if performer is not None:
        resource["performer"] = [performer]
    resource["valueQuantity"] = _quantity(total.value, instrument.scoring.total)
    interpretation: list[dict[str, Any]] = []
    if scores.band is not None:
        band = scores.band
        interpretation.append(
            {
                "coding": [band_coding(instrument, band.code, band.label, canonical_base)],
                "text": band.label,
            }
        )
    cutoff = instrument.scoring.cutoff
    if scores.below_cutoff and cutoff is not None:
        interpretation.append(
            {"coding": [below_cutoff_coding(instrument, canonical_base)], "text": cutoff.meaning}
        )
    if interpretation:
        resource["interpretation"] = interpretation
    notes = [_proration_note(sv) for sv in (total, *scores.subscales) if sv.prorated]
    if notes:
        resource["note"] = [{"text": n} for n in notes]
    if isinstance(qr_ref, str):
        derived: dict[str, Any] = {"reference": qr_ref, "type": "QuestionnaireResponse"}
    elif qr_ref is not None:
        derived = dict(qr_ref)
    else:
        derived = {
            "type": "QuestionnaireResponse",
            "identifier": our_identifier("assessment", assessment.key, namespace),
        }
    resource["derivedFrom"] = [derived]
    components = [
        _component(instrument, sdefs[sv.id], sv, canonical_base)
        for sv in scores.subscales
        if sv.id in sdefs
    ]
    if components:
        resource["component"] = components
    return fhirjson.validate(resource, source=assessment.where, mode=validation)


def assessment_resources(
    assessment: Assessment,
    instrument: Instrument,
    scores: Scores,
    *,
    refs: Refs,
    qr_ref: Mapping[str, Any] | str | None = None,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    namespace: str = DEFAULT_NAMESPACE,
    validation: fhirjson.Validation = "full",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(QuestionnaireResponse, Observation)``; ScoringError if the total is missing.

    Call :func:`questionnaire_response` alone to send the answers of an assessment whose
    total cannot be scored (e.g. an ``in-progress`` one).
    """
    qr = questionnaire_response(
        assessment,
        instrument,
        refs=refs,
        canonical_base=canonical_base,
        namespace=namespace,
        validation=validation,
    )
    obs = score_observation(
        assessment,
        instrument,
        scores,
        refs=refs,
        qr_ref=qr_ref,
        canonical_base=canonical_base,
        namespace=namespace,
        validation=validation,
    )
    return qr, obs
