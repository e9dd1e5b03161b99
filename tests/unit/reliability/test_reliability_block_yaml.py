"""The line-by-line block YAML reader against the line-tracking parser.

Whenever ``block_yaml`` accepts a document, its data and the line of every node are those of
the pure-Python parser; a document it refuses goes the long way, so the messages users see
(file, line, field, reason) are the long way's, byte for byte. Proven on every YAML/JSON file
the project ships, on generated block documents (tricky scalars, keys, indents, comments,
broken lines), and through ``read_records`` and the answer checks: records, their lines and
every problem are the same with and without the fast readers.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir import inputs
from alliance_fhir.assessments import check_assessment, read_records
from alliance_fhir.exceptions import InvalidInputError, Problem, UnknownInstrumentError
from alliance_fhir.instruments.library import load_library

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = sorted(
    p
    for folder in ("examples", "tests/fixtures", "mappings")
    for p in (ROOT / folder).rglob("*")
    if p.suffix in (".yaml", ".yml", ".json")
)
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIBRARY = load_library()


def _slow(text: str) -> tuple[str, Any]:
    try:
        data, pos = inputs._parse_slow(text, "f.yaml")
    except InvalidInputError as exc:
        return "problems", [str(p) for p in exc.problems]
    return "data", (data, pos.lines)


def _agrees(text: str) -> bool:
    """Whether the block reader took ``text``; when it did, it read what the slow one read."""
    block = inputs._BLOCK.read(text)
    if block is not None:
        assert ("data", block) == _slow(text)
    return block is not None


# -- scalars, keys and layouts the generator draws from ------------------------------------

#: Plain scalars the block reader takes (each resolves as PyYAML resolves it) ...
PLAIN = [
    "a", "yes", "no", "on", "off", "y", "true", "False", "TRUE", "null", "Null", "~", "0",
    "1", "-5", "+1", "017", "0o17", "0x1F", "0b101", "1_000", "1:30", "190:20:30", "1e5",
    "1.5", "1.", ".5", "-.inf", ".Inf", "6.8523015e+5", "2024-01-08", "2024-1-8",
    "2024-01-08T16:52:00-05:00", "2024-01-08 16:52:00", "2024-01-08t16:52:00.5Z",
    "http://x.org/a", "urn:oid:1.2", "a b", "a  b", "a:b", "a,b", "it's", 'say "q"', "é",
    "\U0001f600", "MRN-1001", "1234567893", "b000105-s01-trc", "trc-client", "1.0.0",
]  # fmt: skip
#: ... and some it leaves to the long way (or that are no scalar, or an error, unquoted).
TRICKY = [
    "2024-02-30", "a: b", "a #b", "a#b", "- x", "-", "-x", "&a", "*a", "!t x", "|", ">",
    "%x", "@x", "`x", "[1, 2]", "{a: 1}", "x:", "=", "<<", "? x", ": x", ",x", " lead",
]  # fmt: skip
KEYS = ["key", "a", "b.c", "goals-agreed", "q_1", "_x", "x", "heard", "A1"]
TRICKY_KEYS = ["1", "0x1", "true", "null", "yes", "on", "2024-01-01", "1.5", "a b", "'q'", '"d"',
               "-x", "~", "<<", "=", "key", "k" * 999, "k" * 1024, "k" * 1025]  # fmt: skip


def _pick(rng: random.Random, usual: list[str], tricky: list[str]) -> str:
    return rng.choice(tricky if rng.random() < 0.03 else usual)


def _quoted(text: str, rng: random.Random) -> str:
    style = rng.randrange(5)
    if style == 0:
        return "'" + text.replace("'", "''") + "'"
    if style == 1:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if style == 2 and rng.random() < 0.1:  # escapes: the long way's
        return yaml.safe_dump(text, default_style='"', width=1000).split("\n")[0]
    return text if text and text[0] != " " else "'" + text + "'"


def _tree(rng: random.Random, depth: int) -> Any:
    kind = rng.randrange(3 if depth == 0 else 6) if depth < 4 else 5
    if kind <= 1:
        return {
            _pick(rng, KEYS, TRICKY_KEYS): _tree(rng, depth + 1) for _ in range(rng.randrange(1, 5))
        }
    if kind == 2:
        return [_tree(rng, depth + 1) for _ in range(rng.randrange(1, 4))]
    if kind == 3:
        return None
    return _pick(rng, PLAIN, TRICKY)


def _render(node: Any, indent: int, rng: random.Random) -> list[tuple[int, str]]:
    """Lines (indent, text) of a block rendering; a compact or indentless form at random."""
    step = rng.choice([1, 2, 2, 2, 3, 4])
    out: list[tuple[int, str]] = []
    if isinstance(node, dict) and node:
        for key, value in node.items():
            head = _quoted(key, rng) if rng.random() < 0.1 else key
            out += _entry(f"{head}:", value, indent, step, rng, indentless=True)
    elif isinstance(node, list) and node:
        for item in node:
            out += _entry("-", item, indent, step, rng, indentless=False)
    else:
        out.append((indent, _scalar(node, rng)))
    return out


def _scalar(value: Any, rng: random.Random) -> str:
    if value is None:
        return rng.choice(["", "~", "null"])
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    return _quoted(str(value), rng)


def _entry(
    head: str, value: Any, indent: int, step: int, rng: random.Random, *, indentless: bool
) -> list[tuple[int, str]]:
    if isinstance(value, dict | list) and value:
        if head == "-" and rng.random() < 0.7:  # compact: "- key: v" / "- - x"
            below = _render(value, indent + 2, rng)
            return [(indent, f"- {below[0][1]}"), *below[1:]]
        if indentless and isinstance(value, list) and rng.random() < 0.5:
            return [(indent, head), *_render(value, indent, rng)]
        return [(indent, head), *_render(value, indent + step, rng)]
    text = _scalar(value, rng)
    return [(indent, f"{head} {text}".rstrip() if text else head)]


def _text(rng: random.Random, lines: list[tuple[int, str]]) -> str:
    out = []
    if rng.random() < 0.1:
        out.append("---")
    for indent, line in lines:
        if rng.random() < 0.05:
            out.append(rng.choice(["", "   ", "# a comment", "  # indented comment"]))
        tail = rng.choice(["", "  ", " # note", "  #", " #x # y"]) if rng.random() < 0.1 else ""
        out.append(" " * indent + line + tail)
    return "\n".join(out) + rng.choice(["\n", "", "\n\n"])


def _mutated(rng: random.Random, text: str) -> str:
    """One small slip: a line indented one off, a character dropped or doubled, a line twice."""
    lines = text.split("\n")
    at = rng.randrange(len(lines))
    slip = rng.randrange(5)
    if slip == 0:
        lines[at] = " " + lines[at]
    elif slip == 1:
        lines[at] = lines[at][1:]
    elif slip == 2:
        lines.insert(at, lines[at])
    elif slip == 3 and lines[at]:
        cut = rng.randrange(len(lines[at]))
        lines[at] = lines[at][:cut] + lines[at][cut + 1 :]
    else:
        lines[at] = lines[at] + rng.choice([":", " x", "'", '"', "\t", "{", " &a", " *a"])
    return "\n".join(lines)


def _generated(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    text = _text(rng, _render(_tree(rng, 0), rng.choice([0, 0, 0, 2]), rng))
    yield text
    yield _mutated(rng, text)


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_read_the_same(path: Path) -> None:
    """(``parse_yaml`` against the slow parser on them: test_reliability_reading_paths.)"""
    _agrees(inputs.read_text(path))


@SETTINGS
@given(seed=st.integers(0, 2**32))
def test_generated_block_documents_read_the_same(seed: int) -> None:
    for text in _generated(seed):
        _agrees(text)
        try:
            data, pos = inputs.parse_yaml(text, "f.yaml")
            fast: tuple[str, Any] = ("data", (data, pos.lines))
        except InvalidInputError as exc:
            fast = ("problems", [str(p) for p in exc.problems])
        assert fast == _slow(text)


@pytest.mark.parametrize("depth", [10, 64, 65, 300, 1200])
def test_deep_documents_read_the_same(depth: int) -> None:
    """Nesting the pure-Python parser cannot follow is left to it (it says so)."""
    text = "".join(" " * i + "a:\n" for i in range(depth)) + " " * depth + "b: 1\n"
    assert _agrees(text) == (depth <= 64)


@pytest.mark.parametrize("length", [999, 1024, 1025, 2000])
def test_long_keys_read_the_same(length: int) -> None:
    """PyYAML refuses a key past 1024 characters: so does the block reader (it leaves it)."""
    for key in ("k" * length, f"'{'k' * length}'"):
        assert _agrees(f"{key}: 1\n") == (len(key) <= 1000)


def test_the_generator_reaches_the_block_reader() -> None:
    """The property above tests something: most generated documents are read line by line."""
    texts = [next(_generated(seed)) for seed in range(300)]
    taken = sum(_agrees(text) for text in texts)
    assert taken > 100, taken


@SETTINGS
@given(
    doc=st.recursive(
        st.sampled_from(PLAIN + TRICKY) | st.none(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.sampled_from(KEYS + TRICKY_KEYS), inner, max_size=4)
        ),
        max_leaves=25,
    )
)
def test_dumped_documents_read_the_same(doc: Any) -> None:
    """What PyYAML's own dumper writes (the exporters' usual tool)."""
    _agrees(yaml.safe_dump(doc, default_flow_style=False, allow_unicode=True, sort_keys=False))


# -- record files through read_records and the answer checks ---------------------------------

RECORDS = """\
defaults:
  patient:
    system: http://example-clinic.org/mrn
    value: MRN-B000105
  practitioner:
    system: http://hl7.org/fhir/sid/us-npi
    value: '1000395958'
assessments:
- key: b000105-s01-trc
  instrument: trc-client
  authored: '2024-02-19T09:52:00-05:00'
  session: 1
  answers:
    heard: '5'
    understood: '5'
    validated: '5'
    trust: '5'
    goals-agreed: '4'
    goals-own: '5'
    progress-agreed: '5'
    small-steps: '5'
    approach: '4'
    involved: '5'
    pace: '4'
    speak-up: '5'
    safe: '5'
    respected: '5'
    confidentiality: '4'
    held-back: '1'
    overall: '5'
- key: b000105-s02-trc
  instrument: trc-client
  authored: 2024-02-26T09:52:00-05:00
  session: 2
  answers:
    heard: 5
    understood: '4'
    validated: '5'
    trust: '5'
    goals-agreed: '5'
    goals-own: '5'
    progress-agreed: '5'
    small-steps: '5'
    approach: '4'
    involved: '5'
    pace: '4'
    speak-up: '5'
    safe: '5'
    respected: '5'
    confidentiality: '4'
    held-back: '1'
    overall: '5'
"""

#: One slip of each kind a record file can have: (what, text replaced, replacement).
SLIPS = [
    ("valid", "", ""),
    ("YAML syntax", "  session: 2\n", "  session: 2\n   x: 1\n"),
    ("bad indent", "    trust: '5'\n    goals-agreed: '4'", "    trust: '5'\n   goals-agreed: '4'"),
    ("duplicate mapping key", "  session: 1\n", "  session: 1\n  session: 3\n"),
    ("unknown field", "  session: 1\n", "  sesion: 1\n"),
    ("unknown top-level field", "assessments:\n", "extra: 1\nassessments:\n"),
    ("duplicate record key", "key: b000105-s02-trc", "key: b000105-s01-trc"),
    ("naive time", "'2024-02-19T09:52:00-05:00'", "'2024-02-19T09:52:00'"),
    ("impossible date", "2024-02-26T09:52:00-05:00", "2024-02-30T09:52:00-05:00"),
    ("bad key", "key: b000105-s01-trc", "key: '-b0'"),
    ("session zero", "session: 1", "session: 0"),
    ("answer true/false", "heard: 5", "heard: true"),
    ("answer list", "heard: 5", "heard:\n    - 5"),
    ("bad linkId", "    pace: '4'\n", "    pace!: '4'\n"),
    ("answer off the scale", "    pace: '4'\n", "    pace: '9'\n"),
    ("unknown item", "    pace: '4'\n", "    pace: '4'\n    paces: '4'\n"),
    ("required item missing", "    overall: '5'\n- key: b000105-s02-trc", "- key: b000105-s02-trc"),
    ("bad default", "value: MRN-B000105", "value: ' '"),
    ("record not a mapping", "- key: b000105-s01-trc", "- x\n- key: b000105-s01-trc"),
    ("tab", "  session: 1\n", "  session:\t1\n"),
    ("flow and comments", "  session: 1\n", "  session: 1  # first\n  extra: {a: 1}\n"),
]  # fmt: skip


def _read(path: Path) -> tuple[list[Any], list[str]]:
    """Records (with their lines) and every problem, the answer checks' included."""
    found, problems = read_records(path)
    checked: list[Problem] = []
    unknown: list[str] = []
    for assessment in found:
        try:
            instrument = LIBRARY.get(assessment.instrument)
        except UnknownInstrumentError as exc:  # a slip in the instrument id: said, not checked
            unknown.append(f"{assessment.where}: {exc}")
            continue
        checked += check_assessment(instrument, assessment)
    shown = [(str(p), p.line, p.path, p.field) for p in [*problems, *checked]]
    return [(a, a.line, a.answer_lines, a.where) for a in found], [
        *(str(s) for s in shown),
        *unknown,
    ]


def _both(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = _read(path)
    with monkeypatch.context() as slow_only:
        slow_only.setattr(inputs, "_BLOCK", _Refuses())
        slow_only.setattr(inputs, "_FastLoader", None)
        slow = _read(path)
    return fast, slow


class _Refuses:
    def read(self, text: str) -> None:
        return None


@pytest.mark.parametrize(("what", "old", "new"), SLIPS, ids=[s[0] for s in SLIPS])
def test_record_files_read_and_check_the_same(
    what: str, old: str, new: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert old in RECORDS
    path = tmp_path / "client.yaml"
    path.write_text(RECORDS.replace(old, new, 1), encoding="utf-8")
    fast, slow = _both(path, monkeypatch)
    assert fast == slow
    if what == "valid":
        assert inputs._BLOCK.read(RECORDS) is not None  # the fast path was the one taken
        assert len(fast[0]) == 2
        assert not fast[1]
    else:
        assert fast[1], what  # every slip is reported


@pytest.mark.parametrize(
    "path", [p for p in SHIPPED if "assessments" in p.parts], ids=lambda p: p.name
)
def test_example_record_files_read_and_check_the_same(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, slow = _both(path, monkeypatch)
    assert fast == slow
    assert fast[0]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32))
def test_slipped_record_files_read_and_check_the_same(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    text = RECORDS
    for _ in range(rng.randrange(1, 3)):
        text = _mutated(rng, text)
    path = tmp_path / f"r{seed}.yaml"
    path.write_text(text, encoding="utf-8")
    fast, slow = _both(path, monkeypatch)
    assert fast == slow
