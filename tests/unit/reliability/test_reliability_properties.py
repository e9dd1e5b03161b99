"""Property-based tests of the importers (hypothesis).

* Any valid record reads back identically from a YAML record file and from a CSV row, and
  both score the same.
* Arbitrary text, in any of the supported file types, never crashes an importer: it yields
  records or problems that name the file (``InvalidInputError`` is the only error the parser
  raises).
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir.adapters.assessment_files import read_assessments
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.goals import load_plans
from alliance_fhir.inputs import parse_yaml
from alliance_fhir.instruments.library import InstrumentLibrary, load_library
from alliance_fhir.instruments.scoring import score

from .corpus import CSV_HEADER, MRN

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

LIBRARY: InstrumentLibrary = load_library()

keys = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}", fullmatch=True)
mrns = st.from_regex(r"MRN-[0-9]{1,8}", fullmatch=True)
marks = st.integers(min_value=0, max_value=100).map(lambda n: f"{n / 10:.1f}")
offsets = st.integers(min_value=-12 * 4, max_value=14 * 4).map(
    lambda q: timezone(timedelta(minutes=15 * q))
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    authored = draw(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))
    ).replace(microsecond=0, tzinfo=draw(offsets))
    answered = ["q1", "q2", "q3", "q4"]  # SRS requires every item of a completed record
    return {
        "key": draw(keys),
        "mrn": draw(mrns),
        "authored": authored,
        "session": draw(st.none() | st.integers(min_value=1, max_value=500)),
        "answers": {q: draw(marks) for q in sorted(answered)},
    }


def _write_yaml(folder: Path, rec: dict[str, Any]) -> Path:
    doc: dict[str, Any] = {
        "key": rec["key"],
        "instrument": "srs",
        "authored": rec["authored"].isoformat(),
        "patient": {"system": MRN, "value": rec["mrn"]},
        "answers": rec["answers"],
    }
    if rec["session"] is not None:
        doc["session"] = rec["session"]
    path = folder / "record.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _write_csv(folder: Path, rec: dict[str, Any]) -> Path:
    cells = [
        rec["key"],
        "srs",
        "",
        rec["authored"].isoformat(),
        "",
        "" if rec["session"] is None else str(rec["session"]),
        rec["mrn"],
        "",
        *(rec["answers"].get(q, "") for q in ("q1", "q2", "q3", "q4")),
    ]
    path = folder / "records.csv"
    path.write_text(CSV_HEADER + ",".join(cells) + "\n", encoding="utf-8")
    return path


def _comparable(assessment: Any) -> dict[str, Any]:
    return assessment.model_dump(exclude={"source", "line", "answer_lines"})


@SETTINGS
@given(rec=records())
def test_a_valid_record_reads_back_identically_from_yaml_and_csv(rec: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        from_yaml, yaml_problems, _ = read_assessments(_write_yaml(folder, rec))
        from_csv, csv_problems, _ = read_assessments(_write_csv(folder, rec))
    assert yaml_problems == []
    assert csv_problems == []
    assert len(from_yaml) == len(from_csv) == 1
    assert _comparable(from_yaml[0]) == _comparable(from_csv[0])
    got = from_yaml[0]
    assert got.key == rec["key"]
    assert got.authored == rec["authored"]
    assert got.authored.astimezone(UTC) == rec["authored"].astimezone(UTC)
    # and both score the same (the scorer's own properties live in tests/unit/instruments)
    instrument = LIBRARY.get("srs")
    from alliance_fhir.assessments import prepare

    a = score(instrument, prepare(instrument, from_yaml[0]).answers)
    b = score(instrument, prepare(instrument, from_csv[0]).answers)
    assert a == b


texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400
) | st.sampled_from(
    [
        "{",
        "[[[[",
        "key: &a [*a]",
        "a: !!timestamp 2024-13-01",
        "a: 1\nb: \x1f",
        "key: 2024-02-30T10:00:00Z",
        '"unterminated',
        "---\n---\n",
        "\ufeff",
        "\x00\x01",
        "- - - -",
        "{0}{1}{name}%s",
    ]
)


@pytest.mark.parametrize("suffix", [".yaml", ".json", ".csv"])
@SETTINGS
@given(text=texts)
def test_arbitrary_text_never_crashes_an_importer(suffix: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_text(text, encoding="utf-8")
        found, problems, _ = read_assessments(path, instruments=LIBRARY.all())
        _plans, plan_problems = load_plans(path)
    assert all(p.location == str(path) for p in problems + plan_problems)
    if not found:
        assert problems, "a file without records must say why"


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_text_or_one_problem(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.yaml"
        path.write_bytes(raw)
        found, problems, _ = read_assessments(path)
    assert found or problems


@SETTINGS
@given(text=texts)
def test_the_yaml_parser_raises_only_invalid_input_error(text: str) -> None:
    problems = []
    try:
        parse_yaml(text, "fuzz.yaml")
    except InvalidInputError as exc:
        problems = exc.problems or [None]
    assert all(p is not None and p.location == "fuzz.yaml" for p in problems)
