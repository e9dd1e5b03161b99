"""``validate = "shape"`` and ``"full"`` give the same FHIR JSON, byte for byte, and refuse
the same records with the same problems: on every example record and on generated ones."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.assessment import logical_ref, questionnaire_response
from alliance_fhir.app.records import assessment_records, read_assessment_files
from alliance_fhir.assessments import Assessment
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.instruments.library import InstrumentLibrary

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRC_ITEMS = [
    "heard",
    "understood",
    "validated",
    "trust",
    "goals-agreed",
    "goals-own",
    "progress-agreed",
    "small-steps",
    "approach",
    "involved",
    "pace",
    "speak-up",
    "safe",
    "respected",
    "confidentiality",
    "held-back",
    "overall",
]


def _settings(validation: str) -> Settings:
    return Settings(state_path=Path(os.devnull), validate=validation)


def _outcome(records: Any) -> tuple[list[str], list[str], list[str]]:
    return (
        [f"{d.kind}:{d.key}:{d.hash}:{fhirjson.dumps(d.resource)}" for d in records.desired],
        [str(p) for p in records.problems],
        list(records.skipped),
    )


def test_examples_map_to_the_same_bytes_both_ways(library: InstrumentLibrary) -> None:
    assessments, problems = read_assessment_files(
        [EXAMPLES / "clinic" / "assessments"], library, _settings("full")
    )
    assert not problems
    full = _outcome(assessment_records(assessments, library, _settings("full")))
    shape = _outcome(assessment_records(assessments, library, _settings("shape")))
    again = _outcome(assessment_records(assessments, library, _settings("shape")))
    assert len(full[0]) > 150  # responses and their scores (an in-progress one: no score)
    assert shape == full
    assert again == full  # every shape remembered this time


def test_a_value_the_model_refuses_is_refused_with_the_models_problem(
    library: InstrumentLibrary,
) -> None:
    """Same shape as a record already accepted, one bad value (an empty reference from the
    server's side, a dateTime FHIR refuses): the same problems both ways."""
    instrument = library.get("trc-client")
    answers = dict.fromkeys(TRC_ITEMS, "3") | {"do-differently": "more say"}
    good = _trc(answers)
    results: dict[str, list[str]] = {}
    for validation in ("full", "shape"):
        questionnaire_response(
            good, instrument, refs=lambda s, v: {"reference": "Patient/1"}, validation=validation
        )
        with pytest.raises(InvalidInputError) as caught:
            questionnaire_response(
                good, instrument, refs=lambda s, v: {"reference": ""}, validation=validation
            )
        results[validation] = [str(p) for p in caught.value.problems]
    assert results["shape"] == results["full"]
    assert results["full"], "the model refuses the bad value"


def test_a_new_shape_is_checked_by_the_model_once(
    library: InstrumentLibrary, model_validations: list[str]
) -> None:
    """The point of ``shape``: 30 records of one shape cost one model validation."""
    instrument = library.get("trc-client")
    for n in range(30):
        answers = {item: str(1 + (n + i) % 5) for i, item in enumerate(TRC_ITEMS)}
        record = _trc(answers | {"do-differently": f"note {n}"}, key=f"k{n}")
        questionnaire_response(record, instrument, refs=_REFS, validation="shape")
    assert model_validations == ["QuestionnaireResponse"]


_REFS = logical_ref("Patient")
EST = timezone(timedelta(hours=-5))


def _trc(answers: dict[str, Any], key: str = "k1", **kw: Any) -> Assessment:
    return Assessment.model_validate(
        {
            "key": key,
            "instrument": "trc-client",
            "patient": {"system": "http://example-clinic.org/mrn", "value": "MRN-1"},
            "authored": datetime(2024, 2, 21, 14, 52, tzinfo=EST),
            "answers": answers,
            **kw,
        }
    )


_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30
)


@st.composite
def _records(draw: st.DrawFn) -> Assessment:
    answers: dict[str, Any] = {
        item: draw(st.sampled_from(["1", "2", "3", "4", "5"]))
        for item in TRC_ITEMS
        if draw(st.integers(0, 9)) > 0  # now and then an item left out (proration)
    }
    if draw(st.booleans()):
        answers["do-differently"] = draw(_text)
    minutes = draw(st.integers(-12 * 60, 14 * 60))
    when = datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=minutes))) + timedelta(
        seconds=draw(st.integers(0, 10**9))
    )
    mrn = draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9 ._-]{0,12}[A-Za-z0-9]\Z"))
    try:
        return Assessment.model_validate(
            {
                "key": draw(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")),
                "instrument": "trc-client",
                "patient": {"system": "http://example-clinic.org/mrn", "value": mrn},
                "authored": when,
                "status": draw(st.sampled_from(["completed", "amended", "in-progress"])),
                "answers": answers,
            }
        )
    except ValueError:  # the domain model refused it: not a mapping case
        from hypothesis import reject

        reject()


@SETTINGS
@given(batch=st.lists(_records(), min_size=1, max_size=6))
def test_generated_records_map_to_the_same_bytes_both_ways(
    library: InstrumentLibrary, batch: list[Assessment]
) -> None:
    seen: set[str] = set()
    unique = [a for a in batch if not (a.key in seen or seen.add(a.key))]
    full = _outcome(assessment_records(unique, library, _settings("full")))
    shape = _outcome(assessment_records(unique, library, _settings("shape")))
    assert shape == full


def test_goal_plans_map_to_the_same_bytes_both_ways() -> None:
    """Goals, GAS Observations and CarePlans take the same two paths as assessments."""
    from alliance_fhir.app.goal_files import goal_files_records

    outcomes = [
        _outcome(goal_files_records([EXAMPLES / "goals"], _settings(v)))
        for v in ("full", "shape", "shape")
    ]
    assert len(outcomes[0][0]) > 20
    assert not outcomes[0][1]
    assert outcomes[1] == outcomes[0]
    assert outcomes[2] == outcomes[0]  # every shape remembered this time


def _observation(**value: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "score"}, **value}


def test_whole_and_fractional_numbers_share_a_shape_and_are_judged_like_the_model(
    model_validations: list[str],
) -> None:
    """Scores are 3 or 3.5: one shape (one model validation), not one per mix of them; an
    integer element still refuses 3.5 with the model's own problem, and takes 3.0 as it does."""
    for value in (3, 3.5, 4, 2.25):
        fhirjson.validate(_observation(valueQuantity={"value": value}), mode="shape")
    assert model_validations == ["Observation"]

    problems: dict[str, list[str]] = {}
    for mode in ("full", "shape"):
        fhirjson.validate(_observation(valueInteger=3), mode=mode)
        fhirjson.validate(_observation(valueInteger=3.0), mode=mode)
        with pytest.raises(InvalidInputError) as caught:
            fhirjson.validate(_observation(valueInteger=3.5), mode=mode)
        problems[mode] = [str(p) for p in caught.value.problems]
    assert problems["shape"] == problems["full"]
    assert "valueInteger" in problems["full"][0]
