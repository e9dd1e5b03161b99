"""Rule files: the shipped defaults load, and every mistake is pointed at its line and path."""

from __future__ import annotations

from pathlib import Path

import pytest
from monitoringkit import default_rules, instruments, rules_yaml

from alliance_fhir.exceptions import ConfigError, InvalidInputError
from alliance_fhir.monitoring.rules import (
    KINDS,
    ItemFloorParams,
    load_rules,
    load_rules_file,
)


def problems(text: str, *, check: bool = True) -> list[str]:
    with pytest.raises(InvalidInputError) as info:
        rules_yaml(text, check=check)
    return [str(p) for p in info.value.problems]


GOOD = """\
rules:
  - id: srs-low
    instrument: srs
    kind: below-cutoff
    severity: medium
    label: Low session rating
    message: "Total {score} is below the cutoff {cutoff}"
"""


def test_shipped_rules_cover_every_kind_and_the_three_instruments() -> None:
    rules = default_rules()
    assert {r.kind for r in rules} == set(KINDS)
    assert {r.instrument for r in rules} == {"trc-client", "srs", "ors"}
    heard = next(r for r in rules if r.id == "trc-client-heard-floor")
    assert isinstance(heard.params, ItemFloorParams)
    assert heard.params.link_id in {i.link_id for i in instruments()["trc-client"].items}
    assert heard.severity == "high"


def test_a_valid_rule_loads() -> None:
    (rule,) = rules_yaml(GOOD)
    assert (rule.id, rule.kind, rule.severity) == ("srs-low", "below-cutoff", "medium")
    assert rule.render({"score": 30, "cutoff": 36}) == "Total 30 is below the cutoff 36"


def test_unknown_kind_names_line_and_path() -> None:
    text = GOOD.replace("kind: below-cutoff", "kind: below-cutof")
    (msg,) = problems(text)
    assert msg.startswith("rules.yaml:4 at rules[0].kind [kind]:")


def test_misspelt_param_names_its_line() -> None:
    text = """\
rules:
  - id: srs-drop
    instrument: srs
    kind: drop
    severity: low
    label: Drop
    message: "fell by {drop}"
    params:
      reference: previous
      amout: 4
"""
    (msg,) = problems(text)
    assert msg.startswith("rules.yaml:10 at rules[0].params.amout [amout]:")


def test_bad_severity_and_negative_amount_are_both_reported() -> None:
    text = """\
rules:
  - id: a
    instrument: srs
    kind: below-cutoff
    severity: critical
    label: A
    message: "x"
  - id: b
    instrument: srs
    kind: drop
    severity: low
    label: B
    message: "y"
    params: {amount: -1}
"""
    found = problems(text)
    assert found[0].startswith("rules.yaml:5 at rules[0].severity")
    assert found[1].startswith("rules.yaml:14 at rules[1].params.amount")


def test_message_with_a_field_the_kind_does_not_offer() -> None:
    text = GOOD.replace("{cutoff}", "{baseline}")
    (msg,) = problems(text)
    assert msg.startswith("rules.yaml:7 at rules[0].message [message]: unknown field {baseline}")


@pytest.mark.parametrize("template", ["Total {} low", "Total {0} low", "Total {score:q} low"])
def test_message_template_must_render(template: str) -> None:
    text = GOOD.replace('"Total {score} is below the cutoff {cutoff}"', repr(template))
    (msg,) = problems(text)
    assert "rules[0].message" in msg


def test_duplicate_rule_id_points_at_the_second() -> None:
    text = GOOD + GOOD.split("rules:\n", 1)[1].replace("Low session", "Other")
    (msg,) = problems(text)
    assert msg.startswith("rules.yaml:8 at rules[1].id [id]: rule id 'srs-low' is used twice")


def test_unknown_instrument() -> None:
    (msg,) = problems(GOOD.replace("instrument: srs", "instrument: srs2"))
    assert msg.startswith("rules.yaml:3 at rules[0].instrument")
    assert "known instruments: ors" in msg


def test_item_floor_on_an_unknown_item() -> None:
    text = """\
rules:
  - id: floor
    instrument: trc-client
    kind: item-floor
    severity: high
    label: Floor
    message: "{item} at {value}"
    params:
      link_id: hear
"""
    (msg,) = problems(text)
    assert msg.startswith("rules.yaml:9 at rules[0].params.link_id")
    assert "no item 'hear'" in msg


def test_item_floor_on_free_text_is_refused() -> None:
    text = """\
rules:
  - {id: f, instrument: trc-client, kind: item-floor, severity: low, label: F,
     message: "x", params: {link_id: do-differently}}
"""
    (msg,) = problems(text)
    assert "rules[0].params.link_id" in msg
    assert "free text" in msg


def test_drop_needs_an_amount_when_the_instrument_has_no_reliable_change() -> None:
    text = """\
rules:
  - id: srs-drop
    instrument: srs
    kind: drop
    severity: low
    label: Drop
    message: "fell by {drop}"
"""
    (msg,) = problems(text)
    assert msg.startswith("rules.yaml:2 at rules[0].params")
    assert "give params.amount" in msg
    # without the instruments only the shape is checked
    assert rules_yaml(text, check=False)[0].id == "srs-drop"


def test_below_cutoff_on_a_subscale_needs_its_own_cutoff() -> None:
    text = """\
rules:
  - id: bond-low
    instrument: trc-client
    kind: below-cutoff
    severity: low
    label: Bond low
    message: "{score_name} {score}"
    params: {score: bond}
"""
    (msg,) = problems(text)
    assert "give params.cutoff" in msg
    assert rules_yaml(text.replace("{score: bond}", "{score: bond, cutoff: 3.5}"))
    (bad,) = problems(text.replace("{score: bond}", "{score: bonds, cutoff: 3}"))
    assert "rules[0].params.score" in bad


def test_top_level_shape() -> None:
    (msg,) = problems("- a\n- b\n")
    assert "a rule file is a mapping" in msg
    found = problems("rule: []\n")
    assert any(m.startswith("rules.yaml:1 at rule [rule]:") for m in found)  # unknown key
    assert any("[rules]" in m for m in found)  # the list is missing


def test_clinic_directory_overrides_a_shipped_rule(tmp_path: Path) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "local.yaml").write_text(
        GOOD.replace("srs-low", "srs-below-cutoff").replace("medium", "high"), encoding="utf-8"
    )
    loaded = {r.id: r for r in load_rules(instruments().values(), [tmp_path])}
    assert loaded["srs-below-cutoff"].severity == "high"
    assert loaded["srs-below-cutoff"].source == str(rules_dir / "local.yaml")
    assert "srs-drop" in loaded  # the other shipped rules stay
    with pytest.raises(ConfigError):
        load_rules(instruments().values(), [tmp_path / "missing"])


def test_load_rules_file_reports_file_name(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("severity: medium", "severity: urgent"), encoding="utf-8")
    with pytest.raises(InvalidInputError) as info:
        load_rules_file(path, instruments().values())
    assert str(info.value).startswith(f"{path}:5 at rules[0].severity")
