"""Licensee overlays must fit their instrument exactly (placeholder wording only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.instruments.library import load_library, validate_paths
from alliance_fhir.instruments.overlay import answer_text, item_text, load_overlay

LIBRARY = load_library()

SRS_OVERLAY = """\
instrument: srs
version: 1.0.0
licence_holder: Example Counselling Practice
copyright: <copyright line from your licence>
items:
  q1: {text: <official wording of item 1>, answers: {low: <left anchor 1>, high: <right anchor 1>}}
  q2: {text: <official wording of item 2>}
  q3: {text: <official wording of item 3>}
  q4: {text: <official wording of item 4>}
"""


def wai_overlay(answers: str = "") -> str:
    lines = [
        "instrument: wai-sr",
        "licence_holder: Example Counselling Practice",
        "items:",
    ]
    for n in range(1, 13):
        lines.append(f"  q{n}:")
        lines.append(f"    text: <official wording of item {n}>")
        if n == 1 and answers:
            lines.append(f"    answers: {answers}")
    return "\n".join(lines) + "\n"


def write(tmp_path: Path, text: str, name: str = "overlay.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, instrument_id: str) -> list[Problem]:
    with pytest.raises(InvalidInputError) as info:
        load_overlay(path, LIBRARY.get(instrument_id))
    return info.value.problems


def test_valid_overlay_supplies_wording(tmp_path: Path) -> None:
    srs = LIBRARY.get("srs")
    overlay = load_overlay(write(tmp_path, SRS_OVERLAY), srs)
    assert item_text(srs, "q2", overlay) == "<official wording of item 2>"
    assert item_text(srs, "q2") == "Goals and topics"  # our neutral label without it
    assert answer_text(srs, "q1", "high", overlay) == "<right anchor 1>"


def test_wai_overlay_with_answer_wording(tmp_path: Path) -> None:
    answers = "{'1': <a1>, '2': <a2>, '3': <a3>, '4': <a4>, '5': <a5>}"
    wai = LIBRARY.get("wai-sr")
    overlay = load_overlay(write(tmp_path, wai_overlay(answers)), wai)
    assert answer_text(wai, "q1", "3", overlay) == "<a3>"
    assert answer_text(wai, "q2", "3", overlay) == "3"  # no wording given: our label


def test_wrong_instrument(tmp_path: Path) -> None:
    (p,) = problems(write(tmp_path, SRS_OVERLAY), "ors")
    assert p.path == "instrument"
    assert p.line == 1
    assert "not instrument 'ors'" in p.reason


def test_version_mismatch(tmp_path: Path) -> None:
    text = SRS_OVERLAY.replace("version: 1.0.0", "version: 2.0.0")
    (p,) = problems(write(tmp_path, text), "srs")
    assert p.path == "version"
    assert p.line == 2


def test_unknown_and_missing_items(tmp_path: Path) -> None:
    text = SRS_OVERLAY.replace("  q4:", "  q5:")
    found = {p.path: p for p in problems(write(tmp_path, text), "srs")}
    assert set(found) == {"items.q5", "items"}
    assert found["items.q5"].line == 9
    assert "no item 'q5'" in found["items.q5"].reason
    assert "no wording for item(s) q4" in found["items"].reason


def test_answer_code_not_on_scale(tmp_path: Path) -> None:
    answers = "{'1': <a1>, '2': <a2>, '3': <a3>, '4': <a4>, '6': <a6>}"
    found = {p.path: p.reason for p in problems(write(tmp_path, wai_overlay(answers)), "wai-sr")}
    assert "'6' is not a code of scale point5" in found["items.q1.answers.6"]
    assert "missing 5 (give all or none)" in found["items.q1.answers"]


def test_analogue_takes_only_anchors(tmp_path: Path) -> None:
    text = SRS_OVERLAY.replace("high: <right anchor 1>", "middle: <x>")
    (p,) = problems(write(tmp_path, text), "srs")
    assert p.path == "items.q1.answers.middle"


def test_own_instrument_takes_no_overlay(tmp_path: Path) -> None:
    client = LIBRARY.get("trc-client")
    items = "\n".join(f"  {i.link_id}: {{text: <x>}}" for i in client.items)
    text = f"instrument: trc-client\nlicence_holder: Someone\nitems:\n{items}\n"
    (p,) = problems(write(tmp_path, text), "trc-client")
    assert "ships its own wording" in p.reason


def test_shape_errors_have_lines(tmp_path: Path) -> None:
    text = SRS_OVERLAY.replace("  q2: {text: <official wording of item 2>}", "  q2: {txt: oops}")
    found = problems(write(tmp_path, text), "srs")
    assert any(p.path == "items.q2.txt" and p.line == 7 for p in found)


def test_validate_paths_checks_overlays_against_instruments(tmp_path: Path) -> None:
    write(tmp_path, SRS_OVERLAY, "srs-overlay.yaml")
    write(tmp_path, SRS_OVERLAY.replace("instrument: srs", "instrument: nope"), "bad.yaml")
    (p,) = validate_paths([tmp_path])
    assert p.location.endswith("bad.yaml")
    assert "unknown instrument 'nope'" in p.reason
