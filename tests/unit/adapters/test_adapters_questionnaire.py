"""Instrument -> Questionnaire: wording rules, scoring extensions, stability."""

from __future__ import annotations

import json

import pytest
from adapterkit import assert_golden

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.codesystem import codes_system, codesystem_for_instruments
from alliance_fhir.adapters.questionnaire import (
    CALCULATED_EXPRESSION,
    CHOICE_ORIENTATION,
    ENTRY_FORMAT,
    HIDDEN,
    ITEM_CONTROL,
    ORDINAL_VALUE,
    SLIDER_STEP,
    questionnaire_from_instrument,
    rival_questionnaire,
    score_expression,
)
from alliance_fhir.exceptions import ConfigError, LicensedWordingRequired
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.schema import Overlay, OverlayItem


def _ext(node: dict, url: str) -> dict:
    return next(e for e in node.get("extension", []) if e["url"] == url)


def test_trc_client_questionnaire_matches_golden(library: InstrumentLibrary) -> None:
    q = questionnaire_from_instrument(library.get("trc-client"))
    assert_golden("questionnaire-trc-client.json", q)


@pytest.mark.parametrize("instrument_id", ["srs", "ors", "wai-sr"])
def test_licensed_labels_only_matches_golden(
    library: InstrumentLibrary, instrument_id: str
) -> None:
    q = questionnaire_from_instrument(library.get(instrument_id), labels_only=True)
    assert_golden(f"questionnaire-{instrument_id}-labels.json", q)


@pytest.mark.parametrize("instrument_id", ["trc-client", "trc-clinician"])
def test_labels_only_leaves_our_own_wording_alone(
    library: InstrumentLibrary, instrument_id: str
) -> None:
    inst = library.get(instrument_id)
    plain = fhirjson.dumps(questionnaire_from_instrument(inst))
    assert fhirjson.dumps(questionnaire_from_instrument(inst, labels_only=True)) == plain
    q = json.loads(plain)
    texts = [i["text"] for i in q["item"] if not i["linkId"].startswith("score.")]
    assert texts == [i.text for i in inst.items]


def _srs_overlay(library: InstrumentLibrary) -> Overlay:
    return Overlay(
        instrument="srs",
        licence_holder="Example Clinic",
        items={
            i.link_id: OverlayItem(text=f"Licensed line {n}", answers={"low": "lo", "high": "hi"})
            for n, i in enumerate(library.get("srs").items, 1)
        },
    )


def test_the_rival_rendering_is_the_other_wording_choice(library: InstrumentLibrary) -> None:
    srs = library.get("srs")
    overlay = _srs_overlay(library)
    name, labels = rival_questionnaire(srs, overlay=overlay, labels_only=False) or ("", {})
    assert name == "neutral labels (--labels-only)"
    assert labels == questionnaire_from_instrument(srs, labels_only=True)
    name, worded = rival_questionnaire(srs, overlay=overlay, labels_only=True) or ("", {})
    assert name == "the licensee's wording"
    assert worded == questionnaire_from_instrument(srs, overlay=overlay)
    assert rival_questionnaire(srs, overlay=None, labels_only=True) is None
    trc = library.get("trc-client")
    assert rival_questionnaire(trc, overlay=None, labels_only=True) is None


def test_output_is_byte_identical_across_runs(library: InstrumentLibrary) -> None:
    for inst in library.all():
        a = fhirjson.dumps(questionnaire_from_instrument(inst, labels_only=True))
        b = fhirjson.dumps(questionnaire_from_instrument(inst, labels_only=True))
        assert a == b


def test_licensed_instrument_without_overlay_is_refused_with_the_way_out(
    library: InstrumentLibrary,
) -> None:
    with pytest.raises(LicensedWordingRequired) as info:
        questionnaire_from_instrument(library.get("srs"))
    message = str(info.value)
    assert "licensed" in message
    assert "--overlay" in message
    assert "--labels-only" in message
    assert isinstance(info.value, ConfigError)


def test_labels_only_uses_our_labels_and_says_so(library: InstrumentLibrary) -> None:
    srs = library.get("srs")
    q = questionnaire_from_instrument(srs, labels_only=True)
    texts = [i["text"] for i in q["item"] if not i["linkId"].startswith("score.")]
    assert texts == [i.label for i in srs.items]
    assert "only neutral labels" in q["copyright"]


def test_overlay_supplies_wording_and_copyright(library: InstrumentLibrary) -> None:
    srs = library.get("srs")
    overlay = Overlay(
        instrument="srs",
        licence_holder="Example Clinic",
        copyright="Wording (c) its authors, used under licence by Example Clinic.",
        items={
            i.link_id: OverlayItem(
                text=f"Licensed line {n}", answers={"low": f"low {n}", "high": f"high {n}"}
            )
            for n, i in enumerate(srs.items, 1)
        },
    )
    q = questionnaire_from_instrument(srs, overlay=overlay)
    first = q["item"][0]
    assert first["text"] == "Licensed line 1"
    assert [c["text"] for c in first["item"]] == ["low 1", "high 1"]
    assert q["copyright"] == overlay.copyright


def test_overlay_missing_an_item_is_refused(library: InstrumentLibrary) -> None:
    overlay = Overlay(instrument="srs", licence_holder="X", items={"q1": OverlayItem(text="t")})
    with pytest.raises(LicensedWordingRequired, match="no wording for q2, q3, q4"):
        questionnaire_from_instrument(library.get("srs"), overlay=overlay)


def test_canonical_base_moves_url_and_codes(library: InstrumentLibrary) -> None:
    base = "https://fhir.example-clinic.org/canon"
    q = questionnaire_from_instrument(library.get("trc-client"), canonical_base=base)
    assert q["url"] == f"{base}/Questionnaire/trc-client"
    assert q["code"][0]["system"] == codes_system(base)
    assert "alliance-fhir.org" not in json.dumps(q)


def test_reverse_item_carries_keyed_weights(library: InstrumentLibrary) -> None:
    q = questionnaire_from_instrument(library.get("trc-client"))
    by_link = {i["linkId"]: i for i in q["item"]}
    plain = [_ext(o, ORDINAL_VALUE)["valueDecimal"] for o in by_link["trust"]["answerOption"]]
    reverse = [_ext(o, ORDINAL_VALUE)["valueDecimal"] for o in by_link["held-back"]["answerOption"]]
    assert plain == [1, 2, 3, 4, 5]
    assert reverse == [5, 4, 3, 2, 1]
    codes = [o["valueCoding"]["code"] for o in by_link["held-back"]["answerOption"]]
    assert codes == [f"trc-client.true5.{n}" for n in range(1, 6)]


def test_decimal_items_are_sliders_with_bounds(library: InstrumentLibrary) -> None:
    q = questionnaire_from_instrument(library.get("ors"), labels_only=True)
    item = q["item"][0]
    assert item["type"] == "decimal"
    urls = {e["url"]: e for e in item["extension"]}
    assert urls["http://hl7.org/fhir/StructureDefinition/minValue"]["valueDecimal"] == 0
    assert urls["http://hl7.org/fhir/StructureDefinition/maxValue"]["valueDecimal"] == 10
    assert urls["http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"]["valueInteger"] == 1
    control = urls["http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl"]
    assert control["valueCodeableConcept"]["coding"][0]["code"] == "slider"
    assert urls[ENTRY_FORMAT]["valueString"] == "0-10"
    # a line measured to 0.1 has no integer step to state (R4 sliderStepValue is an integer)
    assert SLIDER_STEP not in urls


def _control(node: dict) -> str:
    return str(_ext(node, ITEM_CONTROL)["valueCodeableConcept"]["coding"][0]["code"])


def test_analogue_anchors_are_lower_and_upper_display_items(library: InstrumentLibrary) -> None:
    q = questionnaire_from_instrument(library.get("srs"), overlay=_srs_overlay(library))
    for item in (i for i in q["item"] if not i["linkId"].startswith("score.")):
        assert [(c["type"], _control(c), c["text"]) for c in item["item"]] == [
            ("display", "lower", "lo"),
            ("display", "upper", "hi"),
        ]
        assert [c["linkId"] for c in item["item"]] == [
            f"{item['linkId']}.lower",
            f"{item['linkId']}.upper",
        ]


@pytest.mark.parametrize("instrument_id", ["trc-client", "trc-clinician", "wai-sr"])
def test_likert_items_are_horizontal_radio_buttons(
    library: InstrumentLibrary, instrument_id: str
) -> None:
    q = questionnaire_from_instrument(library.get(instrument_id), labels_only=True)
    choices = [i for i in q["item"] if i["type"] == "choice"]
    assert choices
    for item in choices:
        assert _control(item) == "radio-button"
        assert _ext(item, CHOICE_ORIENTATION)["valueCode"] == "horizontal"


def test_answer_display_does_not_reveal_keying(library: InstrumentLibrary) -> None:
    """A reverse-keyed item shows the very same answers as a plain one; only the
    ordinalValue (which scoring needs) differs."""
    q = questionnaire_from_instrument(library.get("trc-client"))
    by_link = {i["linkId"]: i for i in q["item"]}
    plain = by_link["trust"]["answerOption"]
    reverse = by_link["held-back"]["answerOption"]
    assert [o["valueCoding"] for o in reverse] == [o["valueCoding"] for o in plain]
    assert [o["valueCoding"]["display"] for o in plain] == [
        "Not at all true",
        "A little true",
        "Partly true",
        "Mostly true",
        "Completely true",
    ]


def test_score_items_are_hidden_read_only_and_calculated(library: InstrumentLibrary) -> None:
    wai = library.get("wai-sr")
    q = questionnaire_from_instrument(wai, labels_only=True)
    scores = [i for i in q["item"] if i["linkId"].startswith("score.")]
    assert [s["linkId"] for s in scores] == [
        "score.total",
        "score.task",
        "score.bond",
        "score.goal",
    ]
    for s in scores:
        assert s["readOnly"] is True
        assert _ext(s, HIDDEN)["valueBoolean"] is True
        expr = _ext(s, CALCULATED_EXPRESSION)["valueExpression"]
        assert expr["language"] == "text/fhirpath"
    assert "weight()" in score_expression(wai, wai.scoring.total)


def test_codesystem_lists_every_code_the_questionnaires_use(library: InstrumentLibrary) -> None:
    cs = codesystem_for_instruments(library.all())
    assert cs["content"] == "complete"
    assert cs["caseSensitive"] is True
    defined = {c["code"] for c in cs["concept"]}
    assert cs["count"] == len(defined) == len(cs["concept"])
    system = codes_system()
    used: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("system") == system and "code" in node:
                used.add(node["code"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for inst in library.all():
        walk(questionnaire_from_instrument(inst, labels_only=True))
    assert used <= defined
    assert {"trc-client.total", "trc-client.bond", "srs.band.concern"} <= defined
    again = codesystem_for_instruments(reversed(library.all()))
    assert fhirjson.dumps(again) == fhirjson.dumps(cs)
