"""Answers against the instrument: every problem precise, naming the record and the answer.

``check_answers`` reports unknown linkIds, answers off the scale (a code the item's scale does
not have; a number outside the analogue line or with more decimals than it takes), answers of
the wrong type, and required items left unanswered on a ``completed``/``amended`` record (an
``in-progress`` record may be partial, as FHIR allows). ``check_assessment`` adds the checks
of the record against the instrument (id, version, a clinician form needs its clinician).
``prepare`` runs both and returns the record with answers in the scorer's types: a choice
answer becomes its scale code (a CSV ``"4"`` or YAML ``4`` both name code ``"4"``), a decimal a
number (a CSV ``"7.5"`` becomes ``7.5``), a text answer stays text.

Reasons never repeat a free-text answer: it may hold PHI.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from alliance_fhir.assessments.model import Assessment, RawAnswer
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.instruments.lookup import tables
from alliance_fhir.instruments.schema import Instrument, Item
from alliance_fhir.instruments.scoring import Scores, score

__all__ = ["check_answers", "check_assessment", "normalize_answer", "prepare", "score_assessment"]


class _Off(ValueError):
    """An answer that cannot be read for its item; the message is the Problem's reason."""


def _problem(assessment: Assessment, field: str, reason: str, line: int | None = None) -> Problem:
    return assessment.problem(field, reason, line)


def _kind(value: object) -> str:
    return {str: "text", int: "a whole number", float: "a number"}.get(type(value), "a value")


def normalize_answer(instrument: Instrument, item: Item, value: RawAnswer) -> RawAnswer:
    """``value`` in the scorer's type for ``item``; raises ValueError with the reason."""
    if item.type == "choice":
        if type(value) is str:  # the common case, answered from the instrument's tables
            code = value.strip()
            if code in tables(instrument).codes[item.link_id]:
                return code
        assert item.scale is not None  # guaranteed by Item's validator
        scale = instrument.scale(item.scale)
        codes = [p.code for p in scale.points]
        if isinstance(value, int) and not isinstance(value, bool):
            code = str(value)
        elif isinstance(value, str):
            code = value.strip()
        else:
            raise _Off(f"expected a code of scale {scale.id} ({', '.join(codes)}), got a number")
        if code not in codes:
            raise _Off(f"{code!r} is not on scale {scale.id} ({', '.join(codes)})")
        return code
    if item.type == "decimal":
        analogue = item.analogue
        assert analogue is not None  # guaranteed by Item's validator
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise _Off(f"expected a number from {analogue.min:g} to {analogue.max:g}")
        try:
            exact = Decimal(value.strip() if isinstance(value, str) else repr(value))
        except InvalidOperation:
            raise _Off(
                f"expected a number from {analogue.min:g} to {analogue.max:g}, got text"
            ) from None
        if not exact.is_finite():
            raise _Off("expected a finite number")
        if not Decimal(repr(analogue.min)) <= exact <= Decimal(repr(analogue.max)):
            raise _Off(f"{exact} is outside {analogue.min:g}-{analogue.max:g}")
        exponent = exact.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > analogue.decimals:
            raise _Off(f"{exact} has more than {analogue.decimals} decimal place(s)")
        if isinstance(value, str):
            return int(exact) if exact == exact.to_integral_value() else float(exact)
        return value
    if not isinstance(value, str):
        raise _Off(f"a free-text item takes text, got {_kind(value)}")
    return value


def check_answers(instrument: Instrument, assessment: Assessment) -> list[Problem]:
    """Every problem of ``assessment``'s answers against ``instrument``, in item order."""
    return _checked_answers(instrument, assessment)[0]


def _checked_answers(
    instrument: Instrument, assessment: Assessment
) -> tuple[list[Problem], dict[str, RawAnswer]]:
    """``check_answers``'s problems and, on the way, the answers normalized (item order)."""
    problems: list[Problem] = []
    normalized: dict[str, RawAnswer] = {}
    known = {i.link_id: i for i in instrument.items}
    for link_id in sorted(set(assessment.answers) - set(known)):
        problems.append(
            _problem(
                assessment,
                f"answers.{link_id}",
                f"{instrument.id} has no item {link_id!r}",
                assessment.answer_lines.get(link_id),
            )
        )
    complete = assessment.status != "in-progress"
    for item in instrument.items:
        field = f"answers.{item.link_id}"
        line = assessment.answer_lines.get(item.link_id)
        if item.link_id not in assessment.answers:
            if item.required and complete:
                problems.append(
                    _problem(
                        assessment,
                        field,
                        f"required item not answered (status {assessment.status})",
                    )
                )
            continue
        try:
            normalized[item.link_id] = normalize_answer(
                instrument, item, assessment.answers[item.link_id]
            )
        except _Off as exc:
            problems.append(_problem(assessment, field, str(exc), line))
    return problems, normalized


def check_assessment(instrument: Instrument, assessment: Assessment) -> list[Problem]:
    """``check_answers`` plus the record's fit to the instrument (id, version, respondent)."""
    return _checked(instrument, assessment)[0]


def _checked(
    instrument: Instrument, assessment: Assessment
) -> tuple[list[Problem], dict[str, RawAnswer]]:
    """``check_assessment``'s problems and the normalized answers (checked once, not twice)."""
    problems: list[Problem] = []
    if assessment.instrument != instrument.id:
        problems.append(
            _problem(
                assessment,
                "instrument",
                f"is {assessment.instrument!r}, checked against {instrument.id!r}",
            )
        )
        return problems, {}
    version = assessment.instrument_version
    if version is not None and version != instrument.version:
        problems.append(
            _problem(
                assessment,
                "instrument_version",
                f"answers were given to version {version}; "
                f"the loaded {instrument.id} is version {instrument.version}",
            )
        )
    if instrument.respondent == "clinician" and assessment.practitioner is None:
        problems.append(
            _problem(assessment, "practitioner", f"{instrument.id} is completed by a clinician")
        )
    answer_problems, answers = _checked_answers(instrument, assessment)
    return problems + answer_problems, answers


def prepare(instrument: Instrument, assessment: Assessment) -> Assessment:
    """The record with answers in the scorer's types; InvalidInputError lists every problem."""
    problems, answers = _checked(instrument, assessment)
    if problems:
        raise InvalidInputError(problems)
    return assessment.model_copy(update={"answers": answers})


def score_assessment(instrument: Instrument, assessment: Assessment) -> Scores:
    """Check, normalize and score ``assessment`` (InvalidInputError lists every problem)."""
    return score(instrument, prepare(instrument, assessment).answers)
