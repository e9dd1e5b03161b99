"""The one QuestionnaireResponse reader: the same response reads the same from a file and from
the server (the file path adds line numbers and a note for what it left out)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from alliance_fhir.adapters.response import parse_authored
from alliance_fhir.adapters.response_files import read_questionnaire_responses
from alliance_fhir.cli import main
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.instruments.library import InstrumentLibrary, load_library
from alliance_fhir.log import scrub
from alliance_fhir.monitoring.pull import ServerResponse, instruments_by_url, read_response

BASE = "http://alliance-fhir.org/fhir/Questionnaire"
OURS = "http://alliance-fhir.org/fhir/CodeSystem/alliance-fhir-codes"
SNOMED = "http://snomed.info/sct"
MRN = "http://example-clinic.org/mrn"
SECRET_MRN = "MRN-SECRET-4711"


@pytest.fixture(scope="module")
def library() -> InstrumentLibrary:
    return load_library()


def _qr(instrument: str, items: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A response both paths can read: the subject has an identifier (files) and a
    reference to the server's Patient (monitor)."""
    return {
        "resourceType": "QuestionnaireResponse",
        "id": "77",
        "identifier": {
            "system": "http://alliance-fhir.org/fhir/identifier/assessment",
            "value": "r-1",
        },
        "questionnaire": f"{BASE}/{instrument}|1.0.0",
        "status": "completed",
        "subject": {"reference": "Patient/7", "identifier": {"system": MRN, "value": SECRET_MRN}},
        "authored": "2024-03-04T17:00:00-05:00",
        "item": items,
        **extra,
    }


def _srs(*marks: Any) -> list[dict[str, Any]]:
    return [{"linkId": f"q{i + 1}", "answer": [{"valueDecimal": m}]} for i, m in enumerate(marks)]


class Both:
    """Reads one response through the file importer and through the monitor's pull."""

    def __init__(self, library: InstrumentLibrary, tmp_path: Path) -> None:
        self.library = library
        self.path = tmp_path / "qr.json"

    def file(self, qr: dict[str, Any]) -> tuple[list[Any], list[Problem], list[str]]:
        self.path.write_text(json.dumps(qr, indent=2))
        found, problems, notes = read_questionnaire_responses(self.path, self.library.all())
        return found, problems, notes

    def server(self, qr: dict[str, Any]) -> ServerResponse | list[Problem]:
        try:
            resp = read_response(qr, instruments_by_url(self.library.all()))
        except InvalidInputError as exc:
            return exc.problems
        assert resp is not None
        return resp


@pytest.fixture
def both(library: InstrumentLibrary, tmp_path: Path) -> Both:
    return Both(library, tmp_path)


def test_unknown_link_ids_are_left_out_noted_by_the_file_importer_ignored_by_the_monitor(
    both: Both,
) -> None:
    items = [*_srs(9.1, 9, 8.5, 9.9), {"linkId": "ehr-mood", "answer": [{"valueString": "ok"}]}]
    qr = _qr("srs", items)
    found, problems, notes = both.file(qr)
    assert problems == []
    assert found[0].answers == {"q1": 9.1, "q2": 9, "q3": 8.5, "q4": 9.9}
    assert len(notes) == 1
    assert notes[0].startswith(f"ignored: {both.path}:")
    assert "[item]" in notes[0]
    assert "ehr-mood" in notes[0]
    assert "r-1" in notes[0]
    resp = both.server(qr)
    assert isinstance(resp, ServerResponse)
    assert resp.answers == {"q1": 9.1, "q2": 9, "q3": 8.5, "q4": 9.9}


def test_a_date_only_authored_is_noon_utc_of_that_day_on_both_paths(both: Both) -> None:
    qr = _qr("srs", _srs(9, 9, 9, 9), authored="2024-03-04")
    noon = datetime(2024, 3, 4, 12, tzinfo=UTC)
    found, problems, _ = both.file(qr)
    assert problems == []
    assert found[0].authored == noon
    resp = both.server(qr)
    assert isinstance(resp, ServerResponse)
    assert resp.authored == noon


def test_an_authored_time_without_offset_is_refused_on_both_paths(both: Both) -> None:
    qr = _qr("srs", _srs(9, 9, 9, 9), authored="2024-03-04T17:00:00")
    found, problems, _ = both.file(qr)
    assert found == []
    assert [(p.field, p.path) for p in problems] == [("authored", "QuestionnaireResponse.authored")]
    lines = both.path.read_text().splitlines()
    assert problems[0].line == 1 + next(i for i, t in enumerate(lines) if '"authored"' in t)
    assert "timezone offset" in problems[0].reason
    server = both.server(qr)
    assert isinstance(server, list)
    assert [str(p) for p in server] == [
        "QuestionnaireResponse/77 [authored]: "
        "needs a timezone offset (e.g. 2024-03-04T17:00:00-05:00)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-04T17:00:00Z", datetime(2024, 3, 4, 17, tzinfo=UTC)),
        ("2024-03-04T17:00-05:00", datetime.fromisoformat("2024-03-04T17:00:00-05:00")),
        ("2024-03-04T17:00:00.250+01:00", datetime.fromisoformat("2024-03-04T17:00:00.25+01:00")),
        ("2024-03", "needs at least a full date (YYYY-MM-DD)"),
        ("2024-02-30", "not a FHIR date: 2024-02-30"),
        ("yesterday", "not a FHIR dateTime: yesterday"),
        (None, "needs a date and time with a timezone offset"),
    ],
)
def test_authored_values(text: Any, expected: datetime | str) -> None:
    assert parse_authored(text) == expected


def test_items_in_groups_and_under_answers_are_read_on_both_paths(both: Both) -> None:
    items = [
        {"linkId": "header", "text": "About today", "item": _srs(9.1, 9)},
        {
            "linkId": "ehr-wrapper",
            "answer": [{"valueBoolean": True, "item": _srs(1, 2, 8.5, 9.9)[2:]}],
        },
    ]
    found, problems, notes = both.file(_qr("srs", items))
    assert problems == []
    assert found[0].answers == {"q1": 9.1, "q2": 9, "q3": 8.5, "q4": 9.9}
    assert found[0].answer_lines["q1"] > found[0].line  # type: ignore[operator]
    assert "ehr-wrapper" in notes[0]  # answered, but not an item of srs
    assert "header" not in notes[0]  # unanswered: a group, not an ignored answer
    resp = both.server(_qr("srs", items))
    assert isinstance(resp, ServerResponse)
    assert resp.answers == found[0].answers


def test_every_problem_of_a_response_is_reported_at_once_on_both_paths(both: Both) -> None:
    items = [
        {"linkId": "q1", "answer": [{"valueDecimal": 9}, {"valueDecimal": 8}]},
        {"linkId": "q2", "answer": [{"valueBoolean": True}]},
        {"linkId": "q3", "answer": [{"valueDecimal": 7}]},
        {"linkId": "q3", "answer": [{"valueDecimal": 6}]},
        {"linkId": "q4", "answer": [{"valueString": "my aunt Rosalind"}]},
    ]
    qr = _qr("srs", items, authored="2024-03-04T17:00:00")
    expected = [
        ("authored", "needs a timezone offset (e.g. 2024-03-04T17:00:00-05:00)"),
        ("answers.q1", "more than one answer"),
        ("answers.q2", "expected valueCoding, valueDecimal, valueInteger or valueString"),
        ("answers.q3", "item answered twice"),
    ]
    _, problems, _ = both.file(qr)
    assert [(p.field, p.reason) for p in problems] == expected
    assert [p.path for p in problems] == [
        "QuestionnaireResponse.authored",
        "QuestionnaireResponse.item[0].answer",
        "QuestionnaireResponse.item[1].answer[0]",
        "QuestionnaireResponse.item[3].linkId",
    ]
    assert all(p.line for p in problems)
    server = both.server(qr)
    assert isinstance(server, list)
    assert [(p.location, p.field, p.reason) for p in server] == [
        ("QuestionnaireResponse/77", f, r) for f, r in expected
    ]
    for text in [str(p) for p in problems] + [str(p) for p in server]:
        assert "Rosalind" not in text
        assert SECRET_MRN not in text
        assert "9" not in text.split("]: ", 1)[1]


def test_answer_value_types_and_codings_on_both_paths(both: Both) -> None:
    srs = [{"linkId": "q1", "answer": [{"valueInteger": 9}]}, *_srs(9, 8.5, 9.9)[1:]]
    found, problems, _ = both.file(_qr("srs", srs))
    assert problems == []
    assert found[0].answers == {"q1": 9, "q2": 8.5, "q3": 9.9}
    resp = both.server(_qr("srs", srs))
    assert isinstance(resp, ServerResponse)
    assert resp.answers == {"q1": 9, "q2": 8.5, "q3": 9.9}
    trc = [
        {"linkId": "heard", "answer": [{"valueCoding": {"code": "trc-client.true5.4"}}]},
        {"linkId": "trust", "answer": [{"valueCoding": {"system": OURS, "code": "5"}}]},
        {"linkId": "safe", "answer": [{"valueCoding": {"code": "3"}}]},
        {"linkId": "do-differently", "answer": [{"valueString": "call my aunt Rosalind"}]},
    ]
    expected = {"heard": "4", "trust": "5", "safe": "3", "do-differently": "call my aunt Rosalind"}
    found, problems, _ = both.file(_qr("trc-client", trc))
    assert problems == []
    assert found[0].answers == expected
    resp = both.server(_qr("trc-client", trc))
    assert isinstance(resp, ServerResponse)
    assert resp.answers == expected
    assert "Rosalind" not in scrub("they said call my aunt Rosalind")


def test_calculated_score_items_are_skipped_not_noted(both: Both) -> None:
    items = [*_srs(9, 9, 9, 9), {"linkId": "score.total", "answer": [{"valueDecimal": 99}]}]
    found, problems, notes = both.file(_qr("srs", items))
    assert (problems, notes) == ([], [])
    assert "score.total" not in found[0].answers
    resp = both.server(_qr("srs", items))
    assert isinstance(resp, ServerResponse)
    assert "score.total" not in resp.answers


def test_score_fhir_prints_the_note_for_left_out_answers_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALLIANCE_FHIR_CONFIG", raising=False)
    items = [*_srs(9.1, 9, 8.5, 9.9), {"linkId": "ehr-mood", "answer": [{"valueString": "x"}]}]
    path = tmp_path / "qr.json"
    path.write_text(json.dumps(_qr("srs", items), indent=2))
    result = CliRunner().invoke(main, ["score", "--fhir", str(path)])
    assert result.exit_code == 0
    assert "note: ignored: " in result.stderr
    assert "ehr-mood" in result.stderr
    assert '"resourceType": "QuestionnaireResponse"' in result.stdout


def test_a_file_response_names_every_unknown_person_at_once(both: Both) -> None:
    qr = _qr("trc-clinician", [], author={"reference": "Practitioner/n1"})
    qr["subject"] = {"display": "Giulia Marchetti"}
    _, problems, _ = both.file(qr)
    assert [(p.field, p.reason) for p in problems] == [
        ("subject", "missing the patient"),
        (
            "author",
            "author is only a reference; include author.identifier "
            "or import with a reference resolver",
        ),
    ]
    assert all("Giulia" not in str(p) for p in problems)


@pytest.mark.parametrize(
    ("coding", "reason"),
    [
        ({"system": SNOMED, "code": "1"}, f"coding from {SNOMED}, not the trc-client CodeSystem"),
        (
            {"system": "urn:other", "code": "5"},
            "coding from urn:other, not the trc-client CodeSystem",
        ),
        ({"system": OURS, "code": "9"}, "code not on the true5 scale"),
        ({"code": "not-on-the-scale"}, "code without a system not on the true5 scale"),
        ({"system": OURS}, "a coding without a code"),
    ],
)
def test_codings_we_do_not_understand_are_refused_on_both_paths(
    both: Both, coding: dict[str, Any], reason: str
) -> None:
    items = [
        {"linkId": "heard", "answer": [{"valueCoding": {"system": OURS, "code": "4"}}]},
        {"linkId": "trust", "answer": [{"valueCoding": coding}]},
    ]
    _, problems, _ = both.file(_qr("trc-client", items))
    assert [(p.field, p.reason, p.path) for p in problems] == [
        ("answers.trust", reason, "QuestionnaireResponse.item[1].answer[0].valueCoding")
    ]
    server = both.server(_qr("trc-client", items))
    assert isinstance(server, list)
    assert [(p.location, p.field, p.reason) for p in server] == [
        ("QuestionnaireResponse/77", "answers.trust", reason)
    ]


def test_a_coding_on_a_number_item_is_refused(both: Both) -> None:
    items = [{"linkId": "q1", "answer": [{"valueCoding": {"system": OURS, "code": "9"}}]}]
    server = both.server(_qr("srs", items))
    assert isinstance(server, list)
    assert [p.reason for p in server] == ["a coding answers a decimal item"]


def test_our_codesystem_under_the_configured_canonical_base_is_ours(
    library: InstrumentLibrary,
) -> None:
    base = "https://clinic.example.org/af"
    by_url = instruments_by_url(library.all(), base)
    qr = _qr(
        "trc-client",
        [
            {
                "linkId": "heard",
                "answer": [
                    {
                        "valueCoding": {
                            "system": f"{base}/CodeSystem/alliance-fhir-codes",
                            "code": "2",
                        }
                    }
                ],
            }
        ],
        questionnaire=f"{base}/Questionnaire/trc-client|1.0.0",
    )
    resp = read_response(qr, by_url)
    assert resp is not None
    assert resp.answers == {"heard": "2"}
    other_base = {"system": "https://elsewhere.example.org/CodeSystem/alliance-fhir-codes"}
    qr["item"][0]["answer"][0]["valueCoding"].update(other_base)
    with pytest.raises(InvalidInputError, match="not the trc-client CodeSystem"):
        read_response(qr, by_url)


def test_an_entered_in_error_response_is_read_only_when_asked_for(both: Both) -> None:
    qr = _qr("srs", _srs(9, 9, 9, 9), status="entered-in-error")
    by_url = instruments_by_url(both.library.all())
    assert read_response(qr, by_url) is None
    withdrawn = read_response(qr, by_url, withdrawn=True)
    assert withdrawn is not None
    assert withdrawn.withdrawn
    assert withdrawn.answers == {"q1": 9, "q2": 9, "q3": 9, "q4": 9}
