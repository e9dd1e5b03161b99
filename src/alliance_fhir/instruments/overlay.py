"""Licensee overlays: the official wording of a licensed instrument, supplied by the licensee.

We ship structure and scoring only; a practice holding a licence keeps an overlay file
outside the repository and points alliance-fhir at it. ``load_overlay`` checks that the
overlay fits the instrument exactly:

* ``instrument`` is the instrument's id, and ``version`` (if given) its version;
* the instrument's wording is ``licensed`` (our own instruments carry their text already);
* every linkId of the overlay exists, and every item of the instrument is covered;
* for a choice item, ``answers`` keys are codes of its scale and cover all of them (or none);
  for a decimal (analogue) item the only keys are ``low`` and ``high`` (the line's anchors);
  a text item takes no answers.

Every mismatch is an error (no warnings): a half-fitting overlay would show clients a form that
mixes official and neutral wording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.inputs import Positions, load_document, problems_from_validation
from alliance_fhir.instruments.schema import Instrument, Overlay

__all__ = ["ANALOGUE_ANCHORS", "answer_text", "check_overlay", "item_text", "load_overlay"]

#: Answer keys an overlay may give for a decimal (visual-analogue) item.
ANALOGUE_ANCHORS = ("low", "high")


def load_overlay(path: Path, instrument: Instrument) -> Overlay:
    """Read an overlay file and check it against ``instrument``.

    Raises ``InvalidInputError`` listing every problem with file, line and path.
    """
    data, pos = load_document(path)
    overlay = overlay_from_data(data, pos)
    problems = check_overlay(overlay, instrument, pos)
    if problems:
        raise InvalidInputError(problems)
    return overlay


def overlay_from_data(data: Any, pos: Positions) -> Overlay:
    """Validate the shape of parsed overlay data (not yet its fit to an instrument)."""
    if not isinstance(data, dict):
        reason = f"an overlay is a mapping at the top level, not a {type(data).__name__}"
        raise InvalidInputError(pos.problem((), "", reason))
    try:
        return Overlay.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(problems_from_validation(exc, pos)) from None


def check_overlay(overlay: Overlay, instrument: Instrument, pos: Positions) -> list[Problem]:
    """Every way ``overlay`` does not fit ``instrument`` (empty when it fits)."""
    problems: list[Problem] = []
    if overlay.instrument != instrument.id:
        reason = f"overlay is for {overlay.instrument!r}, not instrument {instrument.id!r}"
        return [pos.problem(("instrument",), "instrument", reason)]
    if overlay.version is not None and overlay.version != instrument.version:
        reason = (
            f"overlay is for version {overlay.version} but the instrument definition "
            f"{instrument.id} is version {instrument.version}"
        )
        problems.append(pos.problem(("version",), "version", reason))
    if instrument.wording != "licensed":
        reason = f"instrument {instrument.id} ships its own wording; overlays are for licensed ones"
        problems.append(pos.problem(("instrument",), "instrument", reason))

    known = {item.link_id: item for item in instrument.items}
    for link_id, entry in overlay.items.items():
        where = ("items", link_id)
        item = known.get(link_id)
        if item is None:
            reason = f"instrument {instrument.id} has no item {link_id!r}"
            problems.append(pos.problem(where, link_id, reason))
            continue
        keys = list(entry.answers)
        if item.type == "text":
            if keys:
                reason = "a text item takes no answer wording"
                problems.append(pos.problem((*where, "answers"), "answers", reason))
        elif item.type == "decimal":
            for key in keys:
                if key not in ANALOGUE_ANCHORS:
                    reason = f"an analogue item takes only 'low' and 'high' anchors, not {key!r}"
                    problems.append(pos.problem((*where, "answers", key), key, reason))
        else:
            assert item.scale is not None  # guaranteed by Item validation
            codes = [p.code for p in instrument.scale(item.scale).points]
            for key in keys:
                if key not in codes:
                    reason = f"{key!r} is not a code of scale {item.scale} ({', '.join(codes)})"
                    problems.append(pos.problem((*where, "answers", key), key, reason))
            absent = [c for c in codes if c not in keys]
            if keys and absent:
                reason = (
                    f"answer wording covers {len(codes) - len(absent)} of {len(codes)} codes "
                    f"of scale {item.scale}; missing {', '.join(absent)} (give all or none)"
                )
                problems.append(pos.problem((*where, "answers"), "answers", reason))
    missing = [i.link_id for i in instrument.items if i.link_id not in overlay.items]
    if missing:
        reason = f"no wording for item(s) {', '.join(missing)}; an overlay must cover every item"
        problems.append(pos.problem(("items",), "items", reason))
    return problems


def item_text(instrument: Instrument, link_id: str, overlay: Overlay | None = None) -> str:
    """The wording to show for an item: the overlay's, else our text, else our label."""
    item = instrument.item(link_id)
    if overlay is not None and link_id in overlay.items:
        return overlay.items[link_id].text
    return item.text or item.label


def answer_text(
    instrument: Instrument, link_id: str, code: str, overlay: Overlay | None = None
) -> str:
    """The wording of one answer (a scale code, or ``low``/``high`` of an analogue line)."""
    item = instrument.item(link_id)
    if overlay is not None and link_id in overlay.items:
        wording = overlay.items[link_id].answers.get(code)
        if wording is not None:
            return wording
    if item.scale:
        for point in instrument.scale(item.scale).points:
            if point.code == code:
                return point.label
    elif item.analogue is not None and code in ANALOGUE_ANCHORS:
        label = item.analogue.low_label if code == "low" else item.analogue.high_label
        if label:
            return label
    raise KeyError(f"{link_id}: {code}")
