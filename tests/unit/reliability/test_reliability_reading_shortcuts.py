"""The reading shortcuts read what the long ways read.

Five shortcuts keep reading fast: the block YAML reader keeps every mapping line it has read
(key and value) for the next record that repeats it, and hands over the lines of each
mapping's keys grouped (a record's answer lines); ``Assessment`` keeps answers that are all
non-blank text without a loop; a file's records share the identifiers an earlier record of
the file validated; and a file's patients and answer texts are registered for log masking
once per file, not per record. Each is compared here with the way it replaces: a reader
that has never seen a line, a look-up per answer, the answer loop, every record validating
its own identifiers, and what the scrubber masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir import block_yaml, inputs
from alliance_fhir.assessments import read_csv, read_records, sources
from alliance_fhir.assessments.model import Assessment, _answered
from alliance_fhir.block_yaml import BlockReader
from alliance_fhir.inputs import Positions
from alliance_fhir.log import scrub

from .test_reliability_block_yaml import RECORDS, SHIPPED, SLIPS

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DOCUMENTS = [
    *(p.read_text(encoding="utf-8-sig") for p in SHIPPED if p.suffix != ".json"),
    *(RECORDS.replace(old, new, 1) for _, old, new in SLIPS),
]


def _fresh() -> BlockReader:
    return BlockReader(inputs._LineLoader.yaml_implicit_resolvers, inputs.MAX_NODES)


def test_a_reader_that_has_seen_every_line_reads_what_a_fresh_one_reads() -> None:
    warm = _fresh()
    for text in DOCUMENTS:
        warm.read(text)
    taken = 0
    for text in DOCUMENTS:
        cold = _fresh().read(text)
        assert warm.read(text) == cold
        taken += cold is not None
    assert taken > len(SLIPS) // 2  # the block reader took most of them: the cache was used


def test_a_line_read_before_is_still_refused_where_it_does_not_fit() -> None:
    reader = _fresh()
    assert reader.read("a: 1\nb:\n  c: x\n") == ({"a": 1, "b": {"c": "x"}}, _lines())
    assert reader.read("a: 1\na: 1\n") is None  # a duplicate key: the long way says where
    assert reader.read("b:\n  c: x\n    a: 1\n") is None  # a deeper line after a value
    assert reader.read("- a: 1\n- b:\n") == ([{"a": 1}, {"b": None}], _seq_lines())


def _lines() -> dict[Any, int]:
    return {(): 1, ("a",): 1, ("b",): 2, ("b", "c"): 3}


def _seq_lines() -> dict[Any, int]:
    return {(): 1, (0,): 1, (0, "a"): 1, (1,): 2, (1, "b"): 2}


def test_a_full_line_cache_starts_again_and_reads_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cold = [_fresh().read(text) for text in DOCUMENTS]
    monkeypatch.setattr(block_yaml, "_LINE_CACHE_SIZE", 3)
    small = _fresh()
    assert [small.read(text) for text in DOCUMENTS] == cold
    assert len(small._entries) <= 3


_answer_keys = st.sampled_from(["heard", "trust", "q1", "do-differently", "x.y_z"])
_answers = st.dictionaries(
    _answer_keys,
    st.one_of(
        st.text(alphabet=" \t\n\xa0a19.", max_size=4),
        st.integers(-3, 12),
        st.floats(allow_nan=False, allow_infinity=False),
        st.none(),
    ),
    max_size=6,
)


@SETTINGS
@given(answers=_answers)
def test_answers_all_text_keep_what_the_answer_loop_keeps(answers: dict[str, Any]) -> None:
    """The check in C and the loop agree on every dict of answers, blank ones included; a
    record with one more unanswered item (which takes the loop) is the same record."""
    kept = Assessment._drop_unanswered(answers)
    assert list(kept.items()) == list(_answered(answers).items())
    record = {
        "key": "k-1",
        "instrument": "trc-client",
        "patient": {"system": "http://example-clinic.org/mrn", "value": "MRN-1"},
        "authored": "2024-03-04T17:00:00-05:00",
    }
    fast = Assessment.model_validate({**record, "answers": answers})
    slow = Assessment.model_validate({**record, "answers": {**answers, "unanswered": None}})
    assert fast == slow
    assert [type(v) for v in fast.answers.values()] == [type(v) for v in slow.answers.values()]


def test_csv_patients_and_free_text_are_masked_and_numbers_are_not(tmp_path: Path) -> None:
    path = tmp_path / "trc.csv"
    path.write_text(
        "record_id,instrument,authored,client_mrn,item.do-differently,item.heard\n"
        "c-1,trc-client,2024-03-04T17:00:00Z,MRN-CSV-SECRET-1,ask my brother Anselm,3\n"
        "c-2,trc-client,2024-03-11T17:00:00Z,MRN-CSV-SECRET-2,4.25,3\n",
        encoding="utf-8",
    )
    found, problems = read_csv(path)
    assert problems == []
    assert [a.key for a in found] == ["c-1", "c-2"]
    line = scrub("MRN-CSV-SECRET-1 and MRN-CSV-SECRET-2 said ask my brother Anselm")
    assert line == "[redacted] and [redacted] said [redacted]"
    assert scrub("took 4.25 s") == "took 4.25 s"  # a number answered is not free text


def test_a_record_refused_is_not_registered(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "- key: r-1\n  instrument: trc-client\n"
        "  patient: {system: http://example-clinic.org/mrn, value: MRN-NEVER-VALID}\n"
        "  authored: 2024-03-04T17:00:00\n"  # no offset: refused
        "- key: r-2\n  instrument: trc-client\n"
        "  patient: {system: http://example-clinic.org/mrn, value: MRN-KEPT-7}\n"
        "  authored: 2024-03-04T17:00:00Z\n",
        encoding="utf-8",
    )
    found, problems = read_records(path)
    assert [a.key for a in found] == ["r-2"]
    assert [p.field for p in problems] == ["authored"]
    assert scrub("MRN-NEVER-VALID MRN-KEPT-7") == "MRN-NEVER-VALID [redacted]"


def test_csv_duplicate_keys_name_both_rows(tmp_path: Path) -> None:
    header = "record_id,instrument,authored,client_mrn,item.q1,item.q2,item.q3,item.q4\n"
    row = "{key},srs,2024-03-0{day}T17:00:00Z,MRN-3001,9.1,9.0,8.7,9.3\n"
    path = tmp_path / "srs.csv"
    path.write_text(
        header + "".join(row.format(key=k, day=d) for k, d in (("a", 1), ("b", 2), ("a", 3))),
        encoding="utf-8",
    )
    found, problems = read_csv(path)
    assert [a.key for a in found] == ["a", "b"]
    assert [str(p) for p in problems] == [
        f"{path}:4 [record_id]: duplicate key 'a': already used at {path}:2"
    ]


@pytest.mark.parametrize("code", range(128))
def test_the_ascii_check_lets_through_exactly_what_the_character_class_does(code: int) -> None:
    text = f"key: a{chr(code)}b\n"
    assert block_yaml._plain_ascii(text) == (block_yaml._OUTSIDE.search(text) is None)
    assert not block_yaml._plain_ascii("key: caf\u00e9\n")  # not ASCII: the class decides


CSV = """\
record_id,instrument,authored,session,client_mrn,clinician_npi,item.q1,item.q2,item.q3,item.q4
s-1,srs,2024-03-04T17:00:00Z,1,MRN-4001,1000000004,9.1,9.0,8.7,9.3
s-2,srs,2024-03-11T17:00:00Z,0,MRN-4001,1000000004,9.1,9.0,8.7,9.3
s-3,srs,2024-03-18T17:00:00Z,3, MRN-4001 ,1000000004,9.1,9.0,8.7,9.3
s-4,srs,2024-03-25T17:00:00Z,4,x|MRN-4001,1000000004,9.1,9.0,8.7,9.3
s-5,srs,2024-04-01T17:00:00Z,5,x|MRN-4001,1000000004,9.1,9.0,8.7,9.3
s-6,srs,2024-04-08T17:00:00Z,6,urn:x|MRN-4001,,9.1,9.0,8.7,9.3
s-7,srs,2024-04-15T17:00:00Z,7,MRN-4001,1000000004,9.1,9.0,8.7,9.3
"""


def _records(path: Path) -> tuple[list[Any], list[str]]:
    found, problems = read_csv(path) if path.suffix == ".csv" else read_records(path)
    return [(a, a.answer_lines, a.where) for a in found], [str(p) for p in problems]


@pytest.mark.parametrize(
    "text",
    [CSV, *(RECORDS.replace(old, new, 1) for _, old, new in SLIPS)],
    ids=["csv", *(what for what, _, _ in SLIPS)],
)
def test_identifiers_shared_within_a_file_read_as_if_each_record_had_its_own(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ("s.csv" if text is CSV else "r.yaml")
    path.write_text(text, encoding="utf-8")
    shared = _records(path)
    with monkeypatch.context() as each_its_own:
        each_its_own.setattr(sources._People, "known", lambda self, raw: raw)
        assert _records(path) == shared
    if text is CSV:
        assert [a.key for a, _, _ in shared[0]] == ["s-1", "s-3", "s-6", "s-7"]
        assert len(shared[1]) == 3  # session 0, and system "x" twice: said each time


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def test_each_mappings_key_lines_are_its_keys_lines() -> None:
    reader = _fresh()
    mappings = 0
    for text in DOCUMENTS:
        read = reader.read(text)
        if read is None:
            continue
        data, lines = read
        for path, keyed in lines.keyed.items():
            mapping = _at(data, path)
            assert list(keyed) == list(mapping)
            assert keyed == {key: lines[(*path, key)] for key in mapping}
            mappings += 1
        assert all(isinstance(_at(data, p), dict) == (p in lines.keyed) for p in lines)
    assert mappings > 100


@pytest.mark.parametrize(
    "text",
    [RECORDS.replace(old, new, 1) for _, old, new in SLIPS],
    ids=[what for what, _, _ in SLIPS],
)
def test_answer_lines_handed_over_are_those_looked_up_one_by_one(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    handed = _records(path)
    with monkeypatch.context() as one_by_one:
        one_by_one.setattr(Positions, "key_lines", lambda self, path: None)
        assert _records(path) == handed


def test_long_lines_are_read_each_time_not_kept() -> None:
    reader = _fresh()
    long_value = "x" * (block_yaml._LINE_CACHE_WIDTH + 1)
    text = f"short: 1\nlong: {long_value}\n"
    assert reader.read(text) == (
        {"short": 1, "long": long_value},
        {(): 1, ("short",): 1, ("long",): 2},
    )
    assert reader.read(text) == _fresh().read(text)
    assert list(reader._entries) == ["short: 1"]
