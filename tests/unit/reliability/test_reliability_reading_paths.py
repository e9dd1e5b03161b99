"""libyaml reads what the line-tracking parser reads: the same data, the same line of every
node, and for a bad document the very same problem (the slow parser words it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir import inputs
from alliance_fhir.exceptions import InvalidInputError

from .test_reliability_hostile_input import HOSTILE_YAML

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _result(parse: Any, text: str) -> tuple[str, Any]:
    try:
        data, pos = parse(text, "f.yaml")
    except InvalidInputError as exc:
        return "problems", [str(p) for p in exc.problems]
    return "data", (data, pos.lines)


def test_libyaml_is_in_use() -> None:
    """The speed comes from libyaml; a PyYAML built without it still works (slowly)."""
    assert yaml.__with_libyaml__
    assert inputs._FastLoader is not None


@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml", ".json")),
    ids=lambda p: p.name,
)
def test_example_files_read_the_same(path: Path) -> None:
    text = inputs.read_text(path)
    assert _result(inputs.parse_yaml, text) == _result(inputs._parse_slow, text)


@pytest.mark.parametrize("path", sorted(MAPPINGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_definitions_read_the_same_and_skip_the_slow_parser(path: Path) -> None:
    """Every sync loads these first: a question mark in an item's text beside one-line flow
    mappings used to send two of them to the pure-Python parser (half the library's load)."""
    text = inputs.read_text(path)
    assert _result(inputs.parse_yaml, text) == _result(inputs._parse_slow, text)
    assert not inputs._libyaml_differs(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: [x, y?z]\n",  # on the bracket's line
        "a: [x,\n  y?z]\n",  # in a collection spanning lines
        "a: {k: v,\n  q: y?z}\n",
        "- {a: 1}\n- [b,\n c?]\n",
    ],
)
def test_a_question_mark_that_may_be_in_a_flow_collection_takes_the_slow_parser(
    text: str,
) -> None:
    assert inputs._libyaml_differs(text)
    assert _result(inputs.parse_yaml, text) == _result(inputs._parse_slow, text)


@pytest.mark.parametrize("raw", HOSTILE_YAML, ids=range(len(HOSTILE_YAML)))
def test_hostile_documents_get_the_same_problem(raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        pytest.skip("not text: refused before parsing")
    assert _result(inputs.parse_yaml, text) == _result(inputs._parse_slow, text)


def test_without_libyaml_every_document_takes_the_slow_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "key: k\nanswers:\n  a: '3'\n  b: 4\n"
    fast = _result(inputs.parse_yaml, text)
    monkeypatch.setattr(inputs, "_FastLoader", None)
    assert _result(inputs.parse_yaml, text) == fast
    assert fast[0] == "data"


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.dates(),
)
_keys = st.one_of(st.text(max_size=12), st.integers(-5, 99), st.booleans(), st.none())
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=30,
)


@SETTINGS
@given(doc=_documents, style=st.sampled_from([False, True, None]))
def test_generated_documents_read_the_same(doc: Any, style: bool | None) -> None:
    text = yaml.safe_dump(doc, default_flow_style=style, allow_unicode=True)
    assert _result(inputs.parse_yaml, text) == _result(inputs._parse_slow, text)


_yamlish = st.text(
    alphabet=st.sampled_from(list("ab:-'\"[]{},&*!?#|> \n\t0123456789.~@`%")), max_size=60
)


@SETTINGS
@given(text=_yamlish)
def test_generated_scraps_read_the_same(text: str) -> None:
    """Half-YAML scraps: whatever the slow parser says (data or problem), the fast says."""
    assert _result(inputs.parse_yaml, text) == _result(inputs._parse_slow, text)
