"""Loading instrument definitions: errors name file, line, path and reason; clinic overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance_fhir.exceptions import ConfigError, InvalidInputError, Problem
from alliance_fhir.instruments import library as library_module
from alliance_fhir.instruments.library import (
    INSTRUMENT_KINDS,
    FileKind,
    UnknownInstrumentError,
    load_library,
    validate_paths,
)
from alliance_fhir.instruments.loader import load_instrument_file
from alliance_fhir.resources import bundled_mappings

BASE = """\
id: demo
url: http://example.org/fhir/Questionnaire/demo
version: 1.0.0
name: Demo
title: Demo check-in
publisher: test
licence: test only
wording: own
respondent: client
code: {system: http://example.org/cs, code: demo}
score_code: {system: http://example.org/cs, code: demo.total}
scales:
  - id: five
    points:
      - {code: "1", label: Low, value: 1}
      - {code: "2", label: Mid, value: 2}
      - {code: "3", label: High, value: 3}
items:
  - link_id: a
    label: First
    text: <first item text>
    type: choice
    scale: five
  - link_id: b
    label: Second
    text: <second item text>
    type: choice
    scale: five
    reverse: true
scoring:
  total: {id: total, label: Total, method: sum}
  bands:
    - {code: low, label: Low, low: 2, high: 3}
    - {code: high, label: High, low: 4, high: 6}
"""


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the ``nth`` line containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth]


def write(tmp_path: Path, text: str, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(InvalidInputError) as info:
        load_instrument_file(path)
    return info.value.problems


def test_base_is_valid(tmp_path: Path) -> None:
    instrument = load_instrument_file(write(tmp_path, BASE))
    assert [i.link_id for i in instrument.items] == ["a", "b"]


def test_unknown_scale_points_at_the_item_field(tmp_path: Path) -> None:
    text = BASE.replace("    scale: five\n    reverse", "    scale: seven\n    reverse")
    path = write(tmp_path, text)
    (p,) = problems_of(path)
    assert p.location == str(path)
    assert p.path == "items[1].scale"
    assert p.field == "scale"
    assert p.line == line_of(text, "scale: seven")
    assert "unknown scale 'seven'" in p.reason


def test_bad_type_names_path_and_line(tmp_path: Path) -> None:
    text = BASE.replace(
        "    type: choice\n    scale: five\n    reverse: true\n", "    type: slider\n"
    )
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "items[1].type"
    assert p.line == line_of(text, "type: slider")
    assert "'choice', 'decimal' or 'text'" in p.reason


def test_choice_without_scale(tmp_path: Path) -> None:
    text = BASE.replace(
        "    type: choice\n    scale: five\n    reverse", "    type: choice\n    reverse"
    )
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "items[1].scale"
    assert p.reason == "a choice item needs a scale"
    assert p.line == line_of(text, "link_id: b")


def test_duplicate_link_id(tmp_path: Path) -> None:
    text = BASE.replace("link_id: b", "link_id: a")
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "items[1].link_id"
    assert p.line == line_of(text, "link_id: a", nth=1)
    assert "duplicate linkIds: a" in p.reason


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    text = BASE.replace("    label: Second\n", "    label: Second\n    label: Again\n")
    (p,) = problems_of(write(tmp_path, text))
    assert p.reason == "duplicate key"
    assert p.line == line_of(text, "label: Again")
    assert p.path == "items[1].label"


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    text = BASE.replace("    label: First", "    label: [First")
    (p,) = problems_of(write(tmp_path, text))
    assert "not valid YAML" in p.reason
    assert p.line is not None


def test_licensed_instrument_with_text(tmp_path: Path) -> None:
    text = BASE.replace("wording: own", "wording: licensed").replace(
        "    text: <second item text>\n", ""
    )
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "items[0].text"
    assert p.line == line_of(text, "text: <first item text>")
    assert "licensee overlay" in p.reason


def test_score_listing_an_unknown_item(tmp_path: Path) -> None:
    text = BASE.replace("method: sum}", "method: sum, items: [a, zz]}")
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "scoring.total.items[1]"
    assert "'zz' is not a scored item" in p.reason


def test_overlapping_bands(tmp_path: Path) -> None:
    text = BASE.replace("low: 4, high: 6", "low: 3, high: 6")
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "scoring.bands[1].low"
    assert p.line == line_of(text, "code: high")
    assert "overlap" in p.reason


def test_mean_proration_needs_a_threshold(tmp_path: Path) -> None:
    text = BASE.replace("method: sum}", "method: sum, proration: {method: mean}}")
    (p,) = problems_of(write(tmp_path, text))
    assert p.path == "scoring.total.proration"
    assert "min_answered or min_fraction" in p.reason


def test_several_problems_reported_at_once(tmp_path: Path) -> None:
    text = BASE.replace("version: 1.0.0", "version: one").replace("label: First", "label: ''")
    problems = problems_of(write(tmp_path, text))
    assert {p.path for p in problems} == {"version", "items[0].label"}
    assert all(p.line is not None for p in problems)


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    (p,) = problems_of(write(tmp_path, "- just\n- a list\n"))
    assert "mapping" in p.reason


def test_json_definition(tmp_path: Path) -> None:
    path = write(tmp_path, '{"id": "demo",\n "items": 3}', "demo.json")
    problems = problems_of(path)
    assert any(p.path == "items" and p.line == 2 for p in problems)


# -- the library -------------------------------------------------------------------------


def test_bundled_library() -> None:
    lib = load_library()
    assert lib.ids() == ["ors", "srs", "trc-client", "trc-clinician", "wai-sr"]
    assert [i.id for i in lib.all()] == lib.ids()
    source = lib.source("srs")
    assert source == bundled_mappings() / "instruments" / "srs.yaml"


def test_unknown_id_lists_known_ones() -> None:
    with pytest.raises(UnknownInstrumentError, match="known instruments: ors, srs") as info:
        load_library().get("phq-9")
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, LookupError)


def _srs_variant(title: str) -> str:
    text = (bundled_mappings() / "instruments" / "srs.yaml").read_text(encoding="utf-8")
    return text.replace("title: Session Rating Scale (SRS) v3", f"title: {title}")


def test_clinic_directory_overrides_and_adds(tmp_path: Path) -> None:
    folder = tmp_path / "clinic" / "instruments"
    folder.mkdir(parents=True)
    write(folder, _srs_variant("Clinic SRS"), "srs.yaml")
    write(folder, BASE, "demo.yaml")
    lib = load_library([tmp_path / "clinic"])
    assert lib.get("srs").title == "Clinic SRS"
    assert lib.source("srs") == folder / "srs.yaml"
    assert "demo" in lib
    assert lib.get("wai-sr").id == "wai-sr"  # bundled ones stay


def test_later_extra_dir_wins_and_flat_dir_ignores_other_kinds(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    write(first, _srs_variant("First"), "srs.yaml")
    write(second, _srs_variant("Second"), "srs.yml")
    write(second, "instrument: srs\nlicence_holder: A clinic\nitems: {}\n", "overlay.yaml")
    lib = load_library([first, second])
    assert lib.get("srs").title == "Second"


def test_bad_clinic_file_fails_the_load_with_its_problems(tmp_path: Path) -> None:
    folder = tmp_path / "instruments"
    folder.mkdir()
    text = BASE.replace("link_id: b", "link_id: a")
    write(folder, text)
    with pytest.raises(InvalidInputError) as info:
        load_library([tmp_path])
    (p,) = info.value.problems
    assert p.location == str(folder / "demo.yaml")
    assert p.path == "items[1].link_id"


def test_same_id_twice_in_one_directory(tmp_path: Path) -> None:
    write(tmp_path, BASE, "one.yaml")
    write(tmp_path, BASE, "two.yaml")
    with pytest.raises(InvalidInputError, match="also defined in"):
        load_library([tmp_path])


def test_missing_extra_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_library([tmp_path / "nowhere"])


# -- validate_paths ----------------------------------------------------------------------


def test_validate_bundled_mappings_is_clean() -> None:
    """With the full table of kinds (rules included) the shipped mappings have no problem;
    before the table was an argument this passed only when another test had imported
    ``alliance_fhir.api`` first (its import registered the rule kind)."""
    from alliance_fhir.app.validation import validate_files
    from alliance_fhir.instruments.library import load_library

    assert validate_files([bundled_mappings()], load_library()) == []


def test_validate_walks_and_skips_sources(tmp_path: Path) -> None:
    (tmp_path / "sources").mkdir()
    write(tmp_path / "sources", "columns: {a: b}\n", "goals.yaml")
    (tmp_path / "deep" / "er").mkdir(parents=True)
    write(tmp_path / "deep" / "er", BASE.replace("version: 1.0.0", "version: x"))
    write(tmp_path, '{"what": "is this"}', "stray.json")
    problems = validate_paths([tmp_path])
    assert sorted((Path(p.location).name, p.path) for p in problems) == [
        ("demo.yaml", "version"),
        ("stray.json", None),
    ]
    stray = next(p for p in problems if p.location.endswith("stray.json"))
    assert "not a recognised mapping file" in stray.reason


def test_validate_duplicate_ids_in_one_run(tmp_path: Path) -> None:
    write(tmp_path, BASE, "one.yaml")
    write(tmp_path, BASE, "two.yaml")
    (p,) = validate_paths([tmp_path])
    assert p.location.endswith("two.yaml")
    assert "also defined in" in p.reason


def test_validate_missing_path(tmp_path: Path) -> None:
    (p,) = validate_paths([tmp_path / "nope.yaml"])
    assert p.reason == "no such file or directory"


def test_kinds_table_extends_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(library_module, "SKIPPED_DIRS", set())
    seen: list[str] = []

    def validate_rule(path: Path, data: object, pos: object, context: object) -> list[Problem]:
        seen.append(path.name)
        return [Problem(str(path), "when", "always wrong")]

    rule = FileKind("rule", lambda d: isinstance(d, dict) and "when" in d, validate_rule, "a rule")
    (tmp_path / "rules").mkdir()
    write(tmp_path / "rules", "when: total < 3\n", "r.yaml")
    (p,) = validate_paths([tmp_path], kinds=(*INSTRUMENT_KINDS, rule))
    assert seen == ["r.yaml"]
    assert p.reason == "always wrong"
    # the table is an argument: a later call without the rule kind does not know rules
    (q,) = validate_paths([tmp_path])
    assert q.reason.startswith("not a recognised mapping file (an instrument has")
    assert "a rule" not in q.reason


def test_validate_knows_goal_plans_and_rules_whatever_was_imported(tmp_path: Path) -> None:
    """The CLI's table (instruments, overlays, goal plans, rules) is composed in one place."""
    from alliance_fhir.app.validation import FILE_KINDS, validate_files
    from alliance_fhir.instruments.library import load_library

    assert [k.name for k in FILE_KINDS] == ["instrument", "overlay", "goal plan", "rule"]
    write(tmp_path, "nothing: here\n", "x.yaml")
    (p,) = validate_files([tmp_path / "x.yaml"], load_library())
    assert p.reason == (
        "not a recognised mapping file (an instrument has 'items' and 'scoring', "
        "an overlay has 'licence_holder', goal plan, rule)"
    )
