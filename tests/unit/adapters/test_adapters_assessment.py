"""Assessment -> QuestionnaireResponse + score Observation: golden files and the rules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from adapterkit import assert_golden

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.assessment import (
    assessment_resources,
    logical_ref,
    questionnaire_response,
    score_observation,
)
from alliance_fhir.assessments import Assessment, score_assessment
from alliance_fhir.exceptions import InvalidInputError, ScoringError
from alliance_fhir.instruments.library import InstrumentLibrary

Refs = Callable[[str, str], Mapping[str, Any]]
EST = timezone(timedelta(hours=-5))
MRN = {"system": "http://example-clinic.org/mrn", "value": "MRN-1003"}
NPI = {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}

TRC_CLIENT = {
    "heard": "3",
    "understood": "3",
    "validated": "4",
    "trust": "4",
    "goals-agreed": "3",
    "goals-own": "3",
    "progress-agreed": "3",
    "small-steps": "4",
    "approach": "3",
    "involved": "2",
    "pace": "3",
    "speak-up": "4",
    "safe": "4",
    "respected": "4",
    "confidentiality": "5",
    "held-back": "4",
    "overall": "3",
    "do-differently": "I would like more say in what we talk about.",
}


def _assessment(instrument: str, answers: dict[str, Any], **kw: Any) -> Assessment:
    return Assessment.model_validate(
        {
            "key": kw.pop("key", f"1003-s07-{instrument}"),
            "instrument": instrument,
            "patient": MRN,
            "practitioner": NPI,
            "authored": datetime(2024, 2, 21, 14, 52, tzinfo=EST),
            "session": 7,
            "answers": answers,
            **kw,
        }
    )


CASES = {
    "trc-client": TRC_CLIENT,
    "srs": {"q1": 8.3, "q2": 7.9, "q3": 8.0, "q4": 8.0},
    "wai-sr": {f"q{n}": str(1 + n % 5) for n in range(1, 13) if n != 7},  # q7 missing: prorated
    "trc-clinician": {
        "attuned": "4",
        "client-trust": "3",
        "regard": "4",
        "unspoken-strain": "4",
        "goals-agreed": "3",
        "goals-clients-own": "3",
        "steps-realistic": "3",
        "tasks-agreed": "3",
        "client-involved": "3",
        "adapted": "3",
        "overall": "3",
        "own-reactions": "4",
        "reactions-contained": "4",
        "boundaries": "5",
        "supervision": "yes",
    },
}


@pytest.mark.parametrize("validation", ["full", "shape"])
@pytest.mark.parametrize("instrument_id", sorted(CASES))
def test_resources_match_golden(
    library: InstrumentLibrary, refs: Refs, instrument_id: str, validation: fhirjson.Validation
) -> None:
    """Both ways of validating give the golden file's bytes (shape: twice, the second from
    the remembered shape)."""
    instrument = library.get(instrument_id)
    # wai-sr leaves q7 blank: a partial form is in-progress (FHIR `required`) and is prorated
    status = "in-progress" if instrument_id == "wai-sr" else "completed"
    assessment = _assessment(instrument_id, CASES[instrument_id], status=status)
    scores = score_assessment(instrument, assessment)
    qr, obs = assessment_resources(
        assessment,
        instrument,
        scores,
        refs=refs,
        qr_ref="urn:uuid:6f1c1b7e-0000-4000-8000-000000000007",
        validation=validation,
    )
    assert_golden(f"qr-{instrument_id}.json", qr)
    assert_golden(f"observation-{instrument_id}.json", obs)
    again = assessment_resources(
        assessment,
        instrument,
        scores,
        refs=refs,
        qr_ref="urn:uuid:6f1c1b7e-0000-4000-8000-000000000007",
        validation=validation,
    )
    assert fhirjson.dumps(again[0]) == fhirjson.dumps(qr)
    assert fhirjson.dumps(again[1]) == fhirjson.dumps(obs)


def test_client_form_is_authored_by_the_patient(library: InstrumentLibrary, refs: Refs) -> None:
    inst = library.get("trc-client")
    qr = questionnaire_response(_assessment("trc-client", TRC_CLIENT), inst, refs=refs)
    assert qr["author"] == qr["source"] == qr["subject"] == {"reference": "Patient/mrn-1003"}
    assert qr["questionnaire"] == "http://alliance-fhir.org/fhir/Questionnaire/trc-client|1.0.0"
    assert qr["identifier"]["system"].endswith("/assessment")
    free = next(i for i in qr["item"] if i["linkId"] == "do-differently")
    assert free["answer"] == [{"valueString": TRC_CLIENT["do-differently"]}]


def test_clinician_form_is_authored_by_the_clinician(
    library: InstrumentLibrary, refs: Refs
) -> None:
    inst = library.get("trc-clinician")
    a = _assessment("trc-clinician", CASES["trc-clinician"])
    qr = questionnaire_response(a, inst, refs=refs)
    assert qr["author"] == {"reference": "Practitioner/1234567893"}
    assert "source" not in qr
    no_clinician = a.model_copy(update={"practitioner": None})
    with pytest.raises(InvalidInputError, match="completed by a clinician"):
        questionnaire_response(no_clinician, inst, refs=refs)


def test_observation_carries_score_band_cutoff_and_subscales(
    library: InstrumentLibrary, refs: Refs
) -> None:
    inst = library.get("trc-client")
    a = _assessment("trc-client", TRC_CLIENT)
    obs = score_observation(a, inst, score_assessment(inst, a), refs=refs)
    assert obs["status"] == "final"
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert obs["code"]["coding"][0]["code"] == "trc-client.total"
    assert obs["valueQuantity"] == {
        "value": 3.35,
        "unit": "{score}",
        "system": "http://unitsofmeasure.org",
        "code": "{score}",
    }
    codes = [i["coding"][0]["code"] for i in obs["interpretation"]]
    assert codes == ["trc-client.band.mixed", "trc-client.cutoff.below"]
    assert [c["code"]["coding"][0]["code"] for c in obs["component"]] == [
        "trc-client.bond",
        "trc-client.goals",
        "trc-client.tasks",
        "trc-client.safety",
    ]
    # default derivedFrom: a logical reference by our assessment identifier
    assert obs["derivedFrom"][0]["identifier"]["value"] == "1003-s07-trc-client"


def test_missing_total_means_no_observation_and_says_why(
    library: InstrumentLibrary, refs: Refs
) -> None:
    inst = library.get("srs")
    a = _assessment("srs", {"q1": 8.0, "q2": 7.5, "q4": 9.0}, status="in-progress")
    scores = score_assessment(inst, a)
    qr = questionnaire_response(a, inst, refs=refs)  # the answers still travel
    assert qr["status"] == "in-progress"
    with pytest.raises(ScoringError, match=r"srs total not computed: .*q3"):
        score_observation(a, inst, scores, refs=refs)
    with pytest.raises(ScoringError):
        assessment_resources(a, inst, scores, refs=refs)


def test_uncomputable_subscale_gets_data_absent_reason(
    library: InstrumentLibrary, refs: Refs
) -> None:
    inst = library.get("trc-client")
    answers = {k: v for k, v in TRC_CLIENT.items() if k not in ("heard", "understood")}
    a = _assessment("trc-client", answers, status="in-progress")
    obs = score_observation(a, inst, score_assessment(inst, a), refs=refs)
    bond = obs["component"][0]
    assert "valueQuantity" not in bond
    assert bond["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "heard" in bond["dataAbsentReason"]["text"]
    assert obs["status"] == "preliminary"
    assert "prorated" in obs["note"][0]["text"]


def test_refs_mapping_and_logical_refs(library: InstrumentLibrary) -> None:
    inst = library.get("srs")
    a = _assessment("srs", CASES["srs"])
    mapping = {(MRN["system"], MRN["value"]): {"reference": "Patient/p1"}}
    assert questionnaire_response(a, inst, refs=mapping)["subject"] == {"reference": "Patient/p1"}
    with pytest.raises(InvalidInputError, match="no patient"):
        questionnaire_response(a, inst, refs={})
    qr = questionnaire_response(a, inst, refs=logical_ref("Patient"))
    assert qr["subject"] == {"type": "Patient", "identifier": MRN}


def test_authored_keeps_its_offset_and_utc_is_z(library: InstrumentLibrary, refs: Refs) -> None:
    inst = library.get("srs")
    qr = questionnaire_response(_assessment("srs", CASES["srs"]), inst, refs=refs)
    assert qr["authored"] == "2024-02-21T14:52:00-05:00"
    utc = _assessment("srs", CASES["srs"], authored=datetime(2024, 2, 21, 19, 52, tzinfo=UTC))
    assert questionnaire_response(utc, inst, refs=refs)["authored"] == "2024-02-21T19:52:00Z"


def test_bad_answers_are_refused_before_any_resource(
    library: InstrumentLibrary, refs: Refs
) -> None:
    inst = library.get("srs")
    a = _assessment("srs", {**CASES["srs"], "q9": 1.0})
    with pytest.raises(InvalidInputError, match=r"answers\.q9"):
        questionnaire_response(a, inst, refs=refs)
