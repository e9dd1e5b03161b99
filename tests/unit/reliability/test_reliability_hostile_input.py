"""Hostile bytes against every file reader the CLI and the daemon use (hypothesis).

Whatever a file holds — arbitrary bytes, non-UTF-8, complex keys, impossible dates, alias
bombs, huge integers, NaN keys — a reader answers with records or with ``InvalidInputError``
problems naming the file; no other exception type escapes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alliance_fhir.adapters.assessment_files import read_assessments
from alliance_fhir.adapters.response_files import read_questionnaire_responses
from alliance_fhir.daemon.inbox import classify
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.goals import load_plans
from alliance_fhir.inputs import load_document
from alliance_fhir.instruments.library import load_library
from alliance_fhir.instruments.loader import load_instrument_file

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INSTRUMENTS = load_library().all()

HOSTILE_YAML = [
    b"? [a, b]\n: 1\n",
    b"key: k\n? {x: 1}\n: y\n",
    b"2024-02-30: x\n",
    b"assessments:\n  - key: k\n    2024-02-30: 1\n",
    b"answers:\n  2023-13-45T99:99:99Z: 3\n",
    b"a: &a [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n",
    b"\xff\xfe\x00k\x00e\x00y",
    b"key: \xc3\x28\n",
    b"n: " + b"9" * 6000 + b"\n",
    b"9" * 6000 + b": x\n",
    b'{"n": ' + b"9" * 6000 + b"}",
    b".nan: 1\n.inf: 2\n-.inf: 3\n",
    b"? !!binary aGVsbG8=\n: 1\n",
    b"k: !!binary '%%%'\n",
    b"k: !!int zz\n? !!float nope\n: 1\n",
    b"k: !!python/object:os.system echo\n",
    b"<<: {a: 1}\nkey: k\n",
    b"key: k\n<<: *nope\n",
    b"- " * 3000 + b"x",
    b'{"resourceType": "Bundle", "entry": [{"resource": {"resourceType": ' * 200,
    b"plan,goal\n\xff,\x00\n",
    b'plan,goal\n"unterminated\n',
    b"\x00" * 64,
]

#: Slow to refuse (deep nesting): fed to the shared parser only. Alias bombs are covered by
#: test_reliability_bad_input.
EXPENSIVE = [
    b"[" * 2000,
]

readers: dict[str, Callable[[Path], Any]] = {
    "read_assessments": lambda p: read_assessments(p, instruments=INSTRUMENTS),
    "load_plans": load_plans,
    "read_questionnaire_responses": lambda p: read_questionnaire_responses(p, INSTRUMENTS),
    "load_document": load_document,
    "load_instrument_file": load_instrument_file,
    "classify": classify,
}


def _feed(reader: str, suffix: str, raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"input{suffix}"
        path.write_bytes(raw)
        problems = []
        try:
            readers[reader](path)
        except InvalidInputError as exc:
            problems = exc.problems or [None]
    assert all(p is not None and p.location == str(path) for p in problems)


@pytest.mark.parametrize("reader", sorted(readers))
@pytest.mark.parametrize("raw", HOSTILE_YAML, ids=range(len(HOSTILE_YAML)))
def test_hostile_documents_give_only_invalid_input(reader: str, raw: bytes) -> None:
    suffix = ".csv" if raw.startswith(b"plan,") else ".json" if raw[:1] in b"{[" else ".yaml"
    _feed(reader, suffix, raw)


@pytest.mark.parametrize("raw", EXPENSIVE, ids=range(len(EXPENSIVE)))
def test_bombs_and_deep_nesting_are_refused(raw: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_bytes(raw)
    with pytest.raises(InvalidInputError) as err:
        load_document(path)
    assert [p.location for p in err.value.problems] == [str(path)]


@SETTINGS
@given(
    reader=st.sampled_from(sorted(readers)),
    suffix=st.sampled_from([".yaml", ".json", ".csv"]),
    raw=st.binary(max_size=400)
    | st.lists(st.sampled_from(HOSTILE_YAML), min_size=1, max_size=3).map(b"\n".join),
)
@example(reader="load_plans", suffix=".yaml", raw=b"? [a, b]\n: 1\n")
def test_arbitrary_bytes_give_only_invalid_input(reader: str, suffix: str, raw: bytes) -> None:
    _feed(reader, suffix, raw)
