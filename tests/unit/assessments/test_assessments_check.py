"""Answer checks: each problem names the record, the answer and why."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from alliance_fhir.assessments import Assessment, check_answers, check_assessment, prepare
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.schema import Instrument

EST = timezone(timedelta(hours=-5))


def _a(instrument: str, answers: dict[str, Any], **kw: Any) -> Assessment:
    return Assessment.model_validate(
        {
            "key": "k-1",
            "instrument": instrument,
            "patient": {"system": "http://example-clinic.org/mrn", "value": "MRN-1001"},
            "authored": datetime(2024, 3, 4, 17, 0, tzinfo=EST),
            "answers": answers,
            "source": "visits.yaml",
            "line": 12,
            **kw,
        }
    )


def _srs(library: InstrumentLibrary) -> Instrument:
    return library.get("srs")


def _fields(problems: list[Any]) -> list[str]:
    return [p.field for p in problems]


def test_complete_valid_answers_pass(library: InstrumentLibrary) -> None:
    assert check_answers(_srs(library), _a("srs", {f"q{n}": 9.1 for n in range(1, 5)})) == []


def test_unknown_link_id(library: InstrumentLibrary) -> None:
    problems = check_answers(
        _srs(library), _a("srs", {"q1": 1, "q2": 1, "q3": 1, "q4": 1, "q5": 1})
    )
    assert _fields(problems) == ["answers.q5"]
    assert str(problems[0]) == "visits.yaml:12 [answers.q5]: assessment k-1: srs has no item 'q5'"


def test_off_scale_choice_code(library: InstrumentLibrary) -> None:
    inst = library.get("wai-sr")
    answers = {f"q{n}": "3" for n in range(1, 13)} | {"q4": "6"}
    problems = check_answers(inst, _a("wai-sr", answers))
    assert _fields(problems) == ["answers.q4"]
    assert "'6' is not on scale point5 (1, 2, 3, 4, 5)" in problems[0].reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (10.5, "outside 0-10"),
        (-1, "outside 0-10"),
        (7.25, "more than 1 decimal place"),
        ("lots", "got text"),
    ],
)
def test_off_the_analogue_line(library: InstrumentLibrary, value: Any, reason: str) -> None:
    answers = {"q1": 5.0, "q2": 5.0, "q3": 5.0, "q4": value}
    problems = check_answers(_srs(library), _a("srs", answers))
    assert _fields(problems) == ["answers.q4"]
    assert reason in problems[0].reason


def test_wrong_types(library: InstrumentLibrary) -> None:
    inst = library.get("trc-client")
    answers = {i.link_id: "4" for i in inst.items if i.scored} | {"heard": 4.5}
    answers["do-differently"] = 42
    problems = check_answers(inst, _a("trc-client", answers))
    assert _fields(problems) == ["answers.heard", "answers.do-differently"]
    assert "got a number" in problems[0].reason
    assert problems[1].reason.endswith("a free-text item takes text, got a whole number")


def test_missing_required_item_on_completed_record(library: InstrumentLibrary) -> None:
    problems = check_answers(_srs(library), _a("srs", {"q1": 5.0, "q2": 5.0, "q4": 5.0}))
    assert _fields(problems) == ["answers.q3"]
    assert "required item not answered" in problems[0].reason
    partial = _a("srs", {"q1": 5.0, "q2": 5.0, "q4": 5.0}, status="in-progress")
    assert check_answers(_srs(library), partial) == []


def test_free_text_is_never_echoed(library: InstrumentLibrary) -> None:
    inst = library.get("trc-client")
    secret = "my sister Jane knows"
    answers = {i.link_id: "9" for i in inst.items if i.scored} | {"do-differently": secret}
    for problem in check_answers(inst, _a("trc-client", answers)):
        assert secret not in str(problem)


def test_prepare_normalizes_source_spellings(library: InstrumentLibrary) -> None:
    inst = library.get("wai-sr")
    answers: dict[str, Any] = {f"q{n}": n % 5 + 1 for n in range(1, 13)}  # YAML ints
    ready = prepare(inst, _a("wai-sr", answers))
    assert ready.answers["q1"] == "2"
    srs = prepare(_srs(library), _a("srs", {"q1": "7.5", "q2": "8", "q3": 9.1, "q4": 10}))
    assert srs.answers == {"q1": 7.5, "q2": 8, "q3": 9.1, "q4": 10}


def test_record_level_checks(library: InstrumentLibrary) -> None:
    inst = library.get("trc-clinician")
    answers = {i.link_id: "3" for i in inst.items if i.scored}
    problems = check_assessment(inst, _a("trc-clinician", answers, instrument_version="2.0"))
    assert _fields(problems) == ["instrument_version", "practitioner"]
    with pytest.raises(InvalidInputError) as info:
        prepare(inst, _a("trc-clinician", answers))
    assert _fields(info.value.problems) == ["practitioner"]


def test_naive_authored_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Assessment.model_validate(
            {
                "key": "k",
                "instrument": "srs",
                "patient": {"system": "http://example-clinic.org/mrn", "value": "MRN-1001"},
                "authored": "2024-03-04T17:00:00",
            }
        )
