"""Importers: YAML/JSON records, CSV, QuestionnaireResponse JSON; bad records don't stop others."""

from __future__ import annotations

import json
from pathlib import Path

from alliance_fhir.adapters.assessment import questionnaire_response
from alliance_fhir.adapters.assessment_files import read_assessments
from alliance_fhir.adapters.response_files import read_questionnaire_responses
from alliance_fhir.assessments import check_assessment, load_csv_map, read_csv, read_records
from alliance_fhir.assessments.model import Identifier
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.log import scrub

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "clinic" / "assessments"
MRN = "http://example-clinic.org/mrn"


def test_example_clinic_imports_cleanly_and_checks(library: InstrumentLibrary) -> None:
    everything = []
    for path in sorted(EXAMPLES.iterdir()):
        assessments, problems, notes = read_assessments(path, instruments=library.all())
        assert notes == [], path
        assert problems == [], path
        everything += assessments
    assert {a.patient.value for a in everything} == {f"MRN-100{n}" for n in range(1, 5)}
    for a in everything:
        assert check_assessment(library.get(a.instrument), a) == [], a.where
    keys = [a.key for a in everything]
    assert len(keys) == len(set(keys))


YAML = """\
defaults:
  patient: {system: http://example-clinic.org/mrn, value: MRN-2001}
assessments:
  - key: a-1
    instrument: srs
    authored: 2024-03-04T17:00:00-05:00
    answers: {q1: 9.1, q2: 9.0, q3: 8.7, q4: 9.3}
  - key: a-2
    instrument: srs
    authored: 2024-03-11T17:00:00
    answers: {q1: 9.1, q2: 9.0, q3: 8.7, q4: 9.3}
  - key: a-3
    instrument: srs
    authored: 2024-03-18T17:00:00-05:00
    answers:
      q1: 9.1
      q2: 9.0
      q3: 8.7
      q4: 9.3
  - key: a-1
    instrument: srs
    authored: 2024-03-25T17:00:00-05:00
"""


def test_yaml_bad_record_names_line_and_field_and_others_proceed(tmp_path: Path) -> None:
    path = tmp_path / "visits.yaml"
    path.write_text(YAML)
    assessments, problems = read_records(path)
    assert [a.key for a in assessments] == ["a-1", "a-3"]
    assert [(p.line, p.field) for p in problems] == [(10, "authored"), (20, "key")]
    assert "timezone" in problems[0].reason
    assert "duplicate key 'a-1'" in problems[1].reason
    assert f"{path}:4" in problems[1].reason  # where the first one was
    assert assessments[1].line == 12
    assert assessments[1].answer_lines["q3"] == 18
    assert assessments[0].patient == Identifier(system=MRN, value="MRN-2001")


def test_yaml_single_record_and_default_errors_point_at_defaults(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(
        json.dumps(
            {
                "key": "j-1",
                "instrument": "ors",
                "patient": {"system": MRN, "value": "MRN-2002"},
                "authored": "2024-03-04T17:00:00Z",
                "answers": {"q1": 5, "q2": None},
            }
        )
    )
    (a,), problems = read_records(one)
    assert problems == []
    assert a.answers == {"q1": 5}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "defaults:\n  patient: {system: not a uri, value: X}\n"
        "assessments:\n  - {key: b-1, instrument: ors, authored: 2024-03-04T17:00:00Z}\n"
    )
    assessments, problems = read_records(bad)
    assert assessments == []
    assert [(p.line, p.field) for p in problems] == [(2, "system")]


CSV = """\
record_id,instrument,instrument_version,authored,status,session,client_mrn,clinician_npi,item.q1,item.q2,item.q3,item.q4
c-1,srs,1.0.0,2024-03-04T17:00:00-05:00,completed,1,MRN-3001,1234567893,9.1,9.0,8.7,9.3
c-2,srs,1.0.0,2024-03-11T17:00:00-05:00,done,2,MRN-3001,1234567893,9.1,9.0,8.7,9.3
c-3,srs,1.0.0,2024-03-18 17:00:00,completed,x,MRN-3001,1234567893,9.1,9.0,8.7,9.3
c-4,ors,1.0.0,2024-03-18T17:00:00Z,completed,3,urn:oid:1.2.3|42,1234567893,5,5,,5
c-5,ors,1.0.0,2024-03-18T17:00:00Z,completed,3,no-system|42,1234567893,5,5,5,5
"""


def test_csv_rows_map_to_assessments_and_errors_name_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text(CSV)
    assessments, problems = read_csv(path)
    assert [a.key for a in assessments] == ["c-1", "c-4"]
    c1 = assessments[0]
    assert c1.answers == {"q1": "9.1", "q2": "9.0", "q3": "8.7", "q4": "9.3"}
    assert c1.practitioner == Identifier(
        system="http://hl7.org/fhir/sid/us-npi", value="1234567893"
    )
    assert c1.session == 1
    assert c1.where == f"{path}:2"
    assert assessments[1].patient == Identifier(system="urn:oid:1.2.3", value="42")
    assert assessments[1].answers == {"q1": "5", "q2": "5", "q4": "5"}  # blank cell: unanswered
    got = sorted((p.line, p.field) for p in problems)
    assert got == [(3, "status"), (4, "authored"), (4, "session"), (6, "client_mrn")]
    assert all(p.location == str(path) for p in problems)


def test_csv_header_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("record_id,instrument,when,client_mrn,item.q1\n")
    assessments, problems = read_csv(path)
    assert assessments == []
    assert [(p.line, p.field) for p in problems] == [(1, "when"), (1, "authored")]


def test_csv_map_default_is_shipped() -> None:
    cmap = load_csv_map()
    assert cmap.patient.system == MRN
    assert cmap.answers.prefix == "item."


def test_questionnaire_response_round_trip(library: InstrumentLibrary, tmp_path: Path) -> None:
    originals, problems = read_records(EXAMPLES / "mrn-1003.yaml")
    assert problems == []
    refs = {
        (MRN, "MRN-1003"): {"reference": "Patient/p3"},
        ("http://hl7.org/fhir/sid/us-npi", "1234567893"): {
            "reference": "Practitioner/n1",
            "type": "Practitioner",
        },
    }
    resources = [questionnaire_response(a, library.get(a.instrument), refs=refs) for a in originals]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    path = tmp_path / "qrs.json"
    path.write_text(json.dumps(bundle, indent=2))
    who = {"Patient/p3": Identifier(system=MRN, value="MRN-1003")}
    who["Practitioner/n1"] = Identifier(system="http://hl7.org/fhir/sid/us-npi", value="1234567893")
    back, problems, _ = read_questionnaire_responses(path, library.all(), resolve_reference=who.get)
    assert problems == []
    assert [a.key for a in back] == [a.key for a in originals]
    for a, b in zip(originals, back, strict=True):
        inst = library.get(a.instrument)
        assert {k: str(v) for k, v in b.answers.items()} == {
            k: str(v) for k, v in a.answers.items()
        }
        assert b.authored == a.authored
        assert b.patient == a.patient
        if inst.respondent == "clinician":
            assert b.practitioner == a.practitioner
        else:
            assert b.practitioner is None


def test_questionnaire_response_problems_do_not_stop_the_bundle(
    library: InstrumentLibrary, tmp_path: Path
) -> None:
    good = {
        "resourceType": "QuestionnaireResponse",
        "identifier": {
            "system": "http://alliance-fhir.org/fhir/identifier/assessment",
            "value": "q-1",
        },
        "questionnaire": "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0",
        "status": "completed",
        "subject": {"identifier": {"system": MRN, "value": "MRN-4001"}},
        "authored": "2024-03-04T17:00:00-05:00",
        "item": [
            {"linkId": "q1", "answer": [{"valueDecimal": 9.1}]},
            {"linkId": "q2", "answer": [{"valueDecimal": 9}]},
            {"linkId": "score.total", "answer": [{"valueDecimal": 18.1}]},
        ],
    }
    no_subject = {**good, "id": "x", "identifier": None, "subject": {"reference": "Patient/9"}}
    naive = {**good, "identifier": {"value": "q-3"}, "authored": "2024-03-04T17:00:00"}
    path = tmp_path / "qrs.json"
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": good}, {"resource": no_subject}, {"resource": naive}],
    }
    path.write_text(json.dumps(bundle, indent=2))
    back, problems, _ = read_questionnaire_responses(path, library.all())
    assert [a.key for a in back] == ["q-1"]
    assert back[0].answers == {"q1": 9.1, "q2": 9}
    assert [(p.field, p.path) for p in problems] == [
        ("subject", "QuestionnaireResponse.entry[1].resource.subject"),
        ("authored", "QuestionnaireResponse.entry[2].resource.authored"),
    ]
    assert all(p.line for p in problems)


def test_patient_identifiers_and_free_text_are_registered_sensitive(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "key: s-1\ninstrument: trc-client\n"
        "patient: {system: http://example-clinic.org/mrn, value: MRN-SECRET-77}\n"
        "authored: 2024-03-04T17:00:00Z\n"
        "answers: {do-differently: please call my aunt Rosalind}\n"
    )
    _, problems = read_records(path)
    assert problems == []
    line = scrub("MRN-SECRET-77 said please call my aunt Rosalind")
    assert "MRN-SECRET-77" not in line
    assert "Rosalind" not in line
