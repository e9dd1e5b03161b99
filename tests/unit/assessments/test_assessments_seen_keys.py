"""A key used again in a later file is refused with where it was first seen (#15: the run
keeps every key it has seen, compactly, so a streamed import of a million stays small)."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from alliance_fhir.app.fingerprints import SourceIndex
from alliance_fhir.app.records import Records, assessment_files_records, read_assessment_files
from alliance_fhir.app.seen_keys import SeenKeys
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.state import StateStore

YAML = """\
defaults:
  patient: {system: http://example-clinic.org/mrn, value: MRN-1}
assessments:
- key: a-1
  instrument: srs
  authored: '2024-02-07T14:51:00-05:00'
  answers: {q1: 4.1, q2: 3, q3: 5.1, q4: 5.2}
- key: a-2
  instrument: srs
  authored: '2024-02-14T14:51:00-05:00'
  answers: {q1: 4.1, q2: 3, q3: 5.1, q4: 5.2}
"""

CSV = """\
record_id,instrument,authored,client_mrn,item.q1,item.q2,item.q3,item.q4
a-3,srs,2024-02-21T14:51:00-05:00,MRN-1,4.0,3.0,5.0,5.0
a-2,srs,2024-02-28T14:51:00-05:00,MRN-1,4.0,3.0,5.0,5.0
"""


def test_a_key_seen_in_an_earlier_file_is_a_problem_naming_its_file_and_line(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(YAML, encoding="utf-8")
    (tmp_path / "b.csv").write_text(CSV, encoding="utf-8")
    settings = Settings(state_path=Path(os.devnull))
    found, problems = read_assessment_files([tmp_path], load_library([]), settings)
    assert [a.key for a in found] == ["a-1", "a-2", "a-3"]
    assert [(p.location, p.line, p.field, p.reason) for p in problems] == [
        (
            str(tmp_path / "b.csv"),
            3,
            "key",
            f"assessment a-2: duplicate of the record in {tmp_path / 'a.yaml'}:8",
        )
    ]


def test_keys_that_share_a_digest_are_told_apart_by_their_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 64-bit digest collision cannot be produced on demand: every key gets the same one.
    monkeypatch.setattr(SeenKeys, "_digest", lambda self, key: 12345)
    (tmp_path / "a.yaml").write_text(YAML, encoding="utf-8")
    (tmp_path / "b.csv").write_text(CSV, encoding="utf-8")
    settings = Settings(state_path=Path(os.devnull))
    found, problems = read_assessment_files([tmp_path], load_library([]), settings)
    assert [a.key for a in found] == ["a-1", "a-2", "a-3"]
    assert [(p.line, p.reason) for p in problems] == [
        (3, f"assessment a-2: duplicate of the record in {tmp_path / 'a.yaml'}:8")
    ]


def test_every_key_is_found_where_it_was_first_added_across_chunks_and_growth() -> None:
    seen = SeenKeys()
    keys = [f"c{n:07d}-s{n % 10 + 1:02d}-srs" for n in range(5000)]
    for n, key in enumerate(keys):
        assert seen.check_in(key, f"srs-{n // 700}.csv", n % 700 + 2) is None
    seen.add("no-file", None, None)
    seen.add("no-line", "bundle.json", None)
    assert len(seen) == 5002
    assert seen.where(keys[0]) == "srs-0.csv:2"
    assert seen.where(keys[1023]) == "srs-1.csv:325"  # the last key of the first chunk
    assert seen.check_in(keys[4999], "other.csv", 9) == "srs-7.csv:101"  # a pending chunk
    assert seen.where("no-file") == "assessment no-file"
    assert seen.where("no-line") == "bundle.json"
    assert all(seen.where(key) == f"srs-{n // 700}.csv:{n % 700 + 2}" for n, key in enumerate(keys))
    assert seen.where("c0005000-s01-srs") is None
    assert seen.where(keys[7].upper()) is None
    assert len(seen) == 5002  # a key seen again is not added


def test_a_key_added_twice_keeps_both_places_in_order_even_when_digests_collide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(SeenKeys, "_digest", lambda self, key: 7)
    seen = SeenKeys()
    for n in range(1100):  # past one chunk of 1,024
        seen.add(f"k{n}", "a.csv", n + 1)
    seen.add("k5", "b.csv", 4)
    assert list(seen.locations("k5")) == [("a.csv", 6), ("b.csv", 4)]
    assert seen.where("k1099") == "a.csv:1100"
    assert seen.check_in("k1100", "b.csv", 5) is None
    assert seen.where("k1100") == "b.csv:5"


def test_a_key_costs_a_fraction_of_what_a_dict_of_keys_costs() -> None:
    """~150 bytes a key as a dict of key text -> location (a million keys: 150 MB); this
    table stays under 40 (digest 8, index 6-12, compressed text a few)."""
    count = 20_000
    keys = [f"c{n // 10:07d}-s{n % 10 + 1:02d}-srs" for n in range(count)]
    sources = [f"srs-{n:05d}.csv" for n in range(count // 2500)]
    seen = SeenKeys()
    tracemalloc.start()
    try:
        for n, key in enumerate(keys):
            seen.add(key, sources[n // 2500], n % 2500 + 2)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held / count < 40
    assert seen.where(keys[-1]) == f"{sources[-1]}:2501"


def test_a_key_of_a_file_skipped_as_unchanged_in_an_earlier_file_makes_it_read(
    tmp_path: Path,
) -> None:
    """The table of skipped files' keys: a changed file now holding a key of a later file
    that would be skipped makes that file read, so its copy is reported as a duplicate."""
    sources = tmp_path / "sources"
    sources.mkdir()
    head = "record_id,instrument,authored,client_mrn,item.q1,item.q2,item.q3,item.q4\n"
    row = "{},srs,2024-02-21T14:51:00-05:00,MRN-1,4.0,3.0,5.0,5.0\n"
    (sources / "a.csv").write_text(head + row.format("x-1"), encoding="utf-8")
    (sources / "z.csv").write_text(head + row.format("x-2") + row.format("x-3"), encoding="utf-8")
    settings = Settings(state_path=tmp_path / "state.sqlite3")
    library = load_library([])

    def run(store: StateStore) -> Records:
        return assessment_files_records(
            [sources], library, settings, sources=SourceIndex(store, "context", settings)
        )

    with StateStore(tmp_path / "state.sqlite3") as store:
        for d in run(store).desired:  # as a sync that wrote them all would leave the store
            store.record(
                kind=d.kind,
                key=d.key,
                resource_type=d.resource_type,
                server_id="1",
                version_id="1",
                content_hash=d.hash,
                status="synced",
                run_id="r",
            )
        unchanged = run(store)
        assert (unchanged.files_skipped, unchanged.problems) == (2, [])
        (sources / "a.csv").write_text(head + row.format("x-1") + row.format("x-3"), "utf-8")
        again = run(store)
    assert again.files_skipped == 0
    assert [(p.location, p.line, p.reason) for p in again.problems] == [
        (
            str(sources / "z.csv"),
            3,
            f"assessment x-3: duplicate of the record in {sources / 'a.csv'}:3",
        )
    ]
