"""A key used again in a later file is refused with where it was first seen (#15: the run
keeps every key it has seen, compactly, so a streamed import of a million stays small)."""

from __future__ import annotations

import os
from pathlib import Path

from alliance_fhir.app.records import read_assessment_files
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import load_library

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
