"""Instrument -> FHIR R4 ``Questionnaire`` (with SDC calculated score items).

Wording
    An ``own`` instrument carries its item text. A ``licensed`` one ships only our neutral
    labels: publishing it needs either the licensee's :class:`Overlay` (official wording) or an
    explicit ``labels_only=True`` (a label-only rendering, e.g. for testing or for a form whose
    wording is on paper). Without either we refuse with :class:`LicensedWordingRequired`.

Scoring in the Questionnaire
    Every choice answer carries the ``ordinalValue`` extension holding the **keyed** value of
    that answer for that item: the scale value, or ``min + max - value`` on a reverse-keyed
    item. So ``weight()`` of an answer is exactly what our scorer's ``keyed_value`` adds, and a
    score's ``calculatedExpression`` is a plain sum (or mean) of ``weight()`` for choice items
    and of ``value`` for decimal items. The expression adds item by item, so a missing answer
    makes the whole expression empty: FHIRPath only scores complete responses; proration of
    partial answers is done by our scorer, which is authoritative.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.codesystem import (
    SCORE_LINK_PREFIX,
    answer_coding,
    coding,
    item_coding,
    rebase,
    score_coding,
)
from alliance_fhir.adapters.identity import DEFAULT_CANONICAL_BASE
from alliance_fhir.exceptions import LicensedWordingRequired
from alliance_fhir.instruments.schema import Instrument, Item, Overlay, ScoreDef

ORDINAL_VALUE = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
MAX_DECIMAL_PLACES = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"
ITEM_CONTROL = "http://hl7.org/fhir/StructureDefinition/questionnaire-itemControl"
ITEM_CONTROL_SYSTEM = "http://hl7.org/fhir/questionnaire-item-control"
SLIDER_STEP = "http://hl7.org/fhir/StructureDefinition/questionnaire-sliderStepValue"
CHOICE_ORIENTATION = "http://hl7.org/fhir/StructureDefinition/questionnaire-choiceOrientation"
ENTRY_FORMAT = "http://hl7.org/fhir/StructureDefinition/entryFormat"
HIDDEN = "http://hl7.org/fhir/StructureDefinition/questionnaire-hidden"
CALCULATED_EXPRESSION = (
    "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
)

#: Scales of at most this many points are laid out in one row.
SHORT_SCALE = 5


def number(value: float | int | Decimal) -> int | float:
    """A JSON number without a spurious ``.0`` (``5.0`` -> ``5``), so output is stable."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return value
    as_float = float(value)
    return int(as_float) if as_float.is_integer() else as_float


def keyed_weight(instrument: Instrument, item: Item, value: float) -> int | float:
    """The weight an answer of scale value ``value`` scores on ``item`` (reverse applied)."""
    if item.reverse:
        low, high = instrument.item_range(item)
        return number(Decimal(str(low)) + Decimal(str(high)) - Decimal(str(value)))
    return number(value)


def score_link_id(score: ScoreDef) -> str:
    """linkId of the hidden item carrying a score."""
    return f"{SCORE_LINK_PREFIX}{score.id}"


def _fp_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def item_expression(item: Item) -> str:
    """FHIRPath (on the QuestionnaireResponse) for the keyed value of one answered item."""
    answer = f"%resource.item.where(linkId = {_fp_string(item.link_id)}).answer.value"
    return f"{answer}.weight()" if item.type == "choice" else answer


def score_expression(instrument: Instrument, score: ScoreDef) -> str:
    """FHIRPath computing ``score`` from a complete response (empty if any item is missing)."""
    items = instrument.score_items(score)
    total = " + ".join(item_expression(i) for i in items)
    if score.method == "mean":
        total = f"({total}) / {len(items)}"
    return f"({total}).round({score.decimals})"


def _licensing(
    instrument: Instrument, overlay: Overlay | None, labels_only: bool
) -> tuple[Overlay | None, bool]:
    """Decide where item wording comes from; refuse when a licensed text would be missing."""
    if labels_only:
        return None, True
    if overlay is not None:
        if instrument.wording != "licensed":
            raise LicensedWordingRequired(
                f"{instrument.id}: an overlay is only for licensed instruments; "
                "this one ships its own wording"
            )
        if overlay.instrument != instrument.id:
            raise LicensedWordingRequired(
                f"overlay is for instrument {overlay.instrument!r}, not {instrument.id!r}"
            )
        if overlay.version is not None and overlay.version != instrument.version:
            raise LicensedWordingRequired(
                f"overlay is for {instrument.id} version {overlay.version}, "
                f"the instrument is version {instrument.version}"
            )
        link_ids = {i.link_id for i in instrument.items}
        unknown = sorted(set(overlay.items) - link_ids)
        missing = sorted(link_ids - set(overlay.items))
        if unknown or missing:
            parts = []
            if missing:
                parts.append(f"no wording for {', '.join(missing)}")
            if unknown:
                parts.append(f"unknown items {', '.join(unknown)}")
            raise LicensedWordingRequired(f"overlay for {instrument.id}: {'; '.join(parts)}")
        return overlay, False
    if instrument.wording == "licensed":
        raise LicensedWordingRequired(
            f"{instrument.id}: the wording of this instrument is licensed ({instrument.licence}) "
            "and is not shipped; pass --overlay with the licensee's wording file, "
            "or --labels-only to publish our neutral labels instead"
        )
    return None, False


def _copyright(instrument: Instrument, overlay: Overlay | None, labels_only: bool) -> str:
    if overlay is not None:
        return overlay.copyright or (
            f"{instrument.licence} Wording supplied by {overlay.licence_holder} under licence."
        )
    if labels_only and instrument.wording == "licensed":
        return (
            f"{instrument.licence} This rendering carries only neutral labels, "
            "not the licensed wording."
        )
    return instrument.licence


def _anchor(link_id: str, control: str, text: str) -> dict[str, Any]:
    return {
        "extension": [_control(control)],
        "linkId": f"{link_id}.{control}",
        "text": text,
        "type": "display",
    }


def _control(code: str) -> dict[str, Any]:
    return {
        "url": ITEM_CONTROL,
        "valueCodeableConcept": {"coding": [{"system": ITEM_CONTROL_SYSTEM, "code": code}]},
    }


def _item(
    instrument: Instrument,
    item: Item,
    overlay: Overlay | None,
    canonical_base: str,
) -> dict[str, Any]:
    wording = overlay.items[item.link_id] if overlay is not None else None
    # Our own items always carry their wording: ``labels_only`` only concerns licensed
    # instruments (whose items have no text), so both renderings of ours are the same bytes.
    if wording is not None:
        text = wording.text
    elif item.text is None:
        text = item.label
    else:
        text = item.text
    out: dict[str, Any] = {}
    extensions: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    if item.type == "decimal":
        analogue = item.analogue
        assert analogue is not None  # guaranteed by Item's validator
        low_value, high_value = number(analogue.min), number(analogue.max)
        extensions += [
            _control("slider"),
            {"url": MIN_VALUE, "valueDecimal": low_value},
            {"url": MAX_VALUE, "valueDecimal": high_value},
            {"url": MAX_DECIMAL_PLACES, "valueInteger": analogue.decimals},
        ]
        if analogue.decimals == 0:
            # sliderStepValue is an integer in R4: a line measured to 0.1 cannot say its
            # step, and a step of 1 would lose its decimals; maxDecimalPlaces says it.
            extensions.append({"url": SLIDER_STEP, "valueInteger": 1})
        # A renderer without a slider shows a number box: the hint says what to type.
        extensions.append({"url": ENTRY_FORMAT, "valueString": f"{low_value}-{high_value}"})
        anchors = wording.answers if wording is not None else {}
        low = anchors.get("low") or analogue.low_label
        high = anchors.get("high") or analogue.high_label
        if low:
            children.append(_anchor(item.link_id, "lower", low))
        if high:
            children.append(_anchor(item.link_id, "upper", high))
    if item.type == "choice":
        assert item.scale is not None  # guaranteed by Item's validator
        # Radio buttons, not an autocomplete box (a tap must not open a tablet's keyboard);
        # a short scale reads best as one row.
        short = len(instrument.scale(item.scale).points) <= SHORT_SCALE
        extensions += [
            _control("radio-button"),
            {"url": CHOICE_ORIENTATION, "valueCode": "horizontal" if short else "vertical"},
        ]
    if extensions:
        out["extension"] = extensions
    out["linkId"] = item.link_id
    out["code"] = [item_coding(instrument, item, canonical_base)]
    out["text"] = text
    out["type"] = item.type
    out["required"] = item.required
    if item.type == "choice":
        assert item.scale is not None  # guaranteed by Item's validator
        scale = instrument.scale(item.scale)
        options = []
        for point in scale.points:
            shown = wording.answers.get(point.code) if wording is not None else None
            options.append(
                {
                    "extension": [
                        {
                            "url": ORDINAL_VALUE,
                            "valueDecimal": keyed_weight(instrument, item, point.value),
                        }
                    ],
                    "valueCoding": answer_coding(
                        instrument, scale, point, canonical_base, display=shown
                    ),
                }
            )
        out["answerOption"] = options
    if children:
        out["item"] = children
    return out


def _score_item(instrument: Instrument, score: ScoreDef, canonical_base: str) -> dict[str, Any]:
    return {
        "extension": [
            {"url": HIDDEN, "valueBoolean": True},
            {
                "url": CALCULATED_EXPRESSION,
                "valueExpression": {
                    "description": f"{score.label} ({score.method} of complete answers)",
                    "language": "text/fhirpath",
                    "expression": score_expression(instrument, score),
                },
            },
        ],
        "linkId": score_link_id(score),
        "code": [score_coding(instrument, score, canonical_base)],
        "text": score.label,
        "type": "decimal",
        "required": False,
        "readOnly": True,
    }


def questionnaire_url(instrument: Instrument, canonical_base: str = DEFAULT_CANONICAL_BASE) -> str:
    """The instrument's canonical URL under the configured base."""
    return rebase(instrument.url, canonical_base)


def questionnaire_canonical(
    instrument: Instrument, canonical_base: str = DEFAULT_CANONICAL_BASE
) -> str:
    """``url|version``, as QuestionnaireResponse.questionnaire cites it."""
    return f"{questionnaire_url(instrument, canonical_base)}|{instrument.version}"


def questionnaire_from_instrument(
    instrument: Instrument,
    *,
    overlay: Overlay | None = None,
    labels_only: bool = False,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
) -> dict[str, Any]:
    """The Questionnaire for ``instrument``, validated against the R4B model.

    Raises LicensedWordingRequired for a licensed instrument without ``overlay`` or
    ``labels_only``, or with an overlay that does not fit. Same input, same bytes out.
    """
    overlay, labels_only = _licensing(instrument, overlay, labels_only)
    link_ids = {i.link_id for i in instrument.items}
    scores = [instrument.scoring.total, *instrument.scoring.subscales]
    clash = sorted(link_ids & {score_link_id(s) for s in scores})
    if clash:
        raise LicensedWordingRequired(
            f"{instrument.id}: item linkIds {', '.join(clash)} clash with score items"
        )
    url = questionnaire_url(instrument, canonical_base)
    resource: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "url": url,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": url}],
        "version": instrument.version,
        "name": instrument.name,
        "title": instrument.title,
        "status": instrument.status,
        "subjectType": ["Patient"],
        "publisher": instrument.publisher,
    }
    if instrument.description:
        resource["description"] = instrument.description
    resource["copyright"] = _copyright(instrument, overlay, labels_only)
    resource["code"] = [coding(instrument.code, canonical_base, display=instrument.title)]
    resource["item"] = [
        *(_item(instrument, i, overlay, canonical_base) for i in instrument.items),
        *(_score_item(instrument, s, canonical_base) for s in scores),
    ]
    return fhirjson.validate_shipped(resource, source=f"Questionnaire {instrument.id}")


def rival_questionnaire(
    instrument: Instrument,
    *,
    overlay: Overlay | None,
    labels_only: bool,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
) -> tuple[str, dict[str, Any]] | None:
    """The other wording choice for the same (url, version): its name and its Questionnaire.

    Only a licensed instrument with an overlay at hand has two (the licensee's wording, or
    our labels with ``labels_only``); our own instruments render the same either way.
    """
    if instrument.wording != "licensed" or overlay is None:
        return None
    if labels_only:
        rival = questionnaire_from_instrument(
            instrument, overlay=overlay, canonical_base=canonical_base
        )
        return "the licensee's wording", rival
    rival = questionnaire_from_instrument(
        instrument, labels_only=True, canonical_base=canonical_base
    )
    return "neutral labels (--labels-only)", rival
