"""Loading one instrument definition file, with errors that name file, line and path.

Field errors come from pydantic with their location. Cross-field errors raised by the schema's
model validators carry no location, only a message such as ``item q3: unknown scale 'x'``;
``refine_location`` maps those messages back to the best path it can (``items[2].scale``), so
a clinic editing a definition is pointed at the line to fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.inputs import PathKey, Positions, load_document, problems_from_validation
from alliance_fhir.instruments.schema import Instrument

__all__ = ["instrument_from_data", "load_instrument_file", "refine_location"]


def load_instrument_file(path: Path) -> Instrument:
    """Read and validate one instrument definition (YAML or JSON).

    Raises ``InvalidInputError`` whose Problems name the file, line, path and reason.
    """
    data, pos = load_document(path)
    return instrument_from_data(data, pos)


def instrument_from_data(data: Any, pos: Positions) -> Instrument:
    """Validate already-parsed definition data; ``pos`` locates the errors."""
    if not isinstance(data, dict):
        kind = type(data).__name__
        reason = f"an instrument definition is a mapping at the top level, not a {kind}"
        raise InvalidInputError(pos.problem((), "", reason))
    try:
        return Instrument.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(_problems(exc, pos, data)) from None


def _problems(exc: ValidationError, pos: Positions, data: Any) -> list[Problem]:
    generic = problems_from_validation(exc, pos)
    problems: list[Problem] = []
    for err, problem in zip(exc.errors(include_url=False), generic, strict=True):
        if err["type"] != "value_error":
            problems.append(problem)
            continue
        loc = tuple(p for p in err["loc"] if not _is_tag(p))
        better = refine_location(loc, problem.reason, data)
        if better == loc:
            problems.append(problem)
        else:
            fld = next((str(p) for p in reversed(better) if isinstance(p, str)), "")
            problems.append(pos.problem(better, fld, problem.reason))
    return problems


def _is_tag(part: int | str) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


# -- mapping validator messages to paths -------------------------------------------------

# Item-level messages (the error is already located at items[N]) -> the field at fault.
_ITEM_FIELD_HINTS: tuple[tuple[str, str], ...] = (
    ("needs a scale", "scale"),
    ("take a scale", "scale"),
    ("needs an analogue", "analogue"),
    ("cannot be scored", "scored"),
    ("no reverse keying", "reverse"),
    ("reverse keying only", "reverse"),
)

# Instrument-level "item <linkId>: ..." messages -> the field of that item.
_ITEM_MESSAGE_HINTS: tuple[tuple[str, str], ...] = (
    ("unknown scale", "scale"),
    ("unknown subscale", "subscale"),
    ("needs text", "text"),
    ("ships no wording", "text"),
)


def refine_location(loc: PathKey, message: str, data: Any) -> PathKey:
    """The best path for a validator ``message`` raised at ``loc`` of definition ``data``."""
    if len(loc) == 2 and loc[0] == "items" and isinstance(loc[1], int):
        return _with_hint(loc, message, _ITEM_FIELD_HINTS)
    if loc == ("scoring",):
        return _scoring_location(message, data) or loc
    if loc == ():
        for rule in _INSTRUMENT_RULES:
            found = rule(message, data)
            if found is not None:
                return found
    return loc


def _with_hint(loc: PathKey, message: str, hints: Sequence[tuple[str, str]]) -> PathKey:
    for needle, fld in hints:
        if needle in message:
            return (*loc, fld)
    return loc


def _list(data: Any, *keys: str) -> list[Any]:
    node = data
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, list) else []


def _index(entries: list[Any], key: str, value: str, *, nth: int = 0) -> int | None:
    seen = 0
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and str(entry.get(key)) == value:
            if seen == nth:
                return i
            seen += 1
    return None


def _item_rule(message: str, data: Any) -> PathKey | None:
    m = re.match(r"item (\S+): ", message)
    if not m:
        return None
    i = _index(_list(data, "items"), "link_id", m.group(1))
    if i is None:
        return None
    return _with_hint(("items", i), message, _ITEM_MESSAGE_HINTS)


def _duplicate_rule(message: str, data: Any) -> PathKey | None:
    m = re.match(r"duplicate linkIds: ([^,\s]+)", message)
    if not m:
        return None
    i = _index(_list(data, "items"), "link_id", m.group(1), nth=1)
    return None if i is None else ("items", i, "link_id")


def _score_path(score_id: str, data: Any) -> PathKey | None:
    scoring = data.get("scoring") if isinstance(data, dict) else None
    total = scoring.get("total") if isinstance(scoring, dict) else None
    if isinstance(total, dict) and str(total.get("id")) == score_id:
        return ("scoring", "total")
    j = _index(_list(data, "scoring", "subscales"), "id", score_id)
    return None if j is None else ("scoring", "subscales", j)


def _score_rule(message: str, data: Any) -> PathKey | None:
    m = re.match(r"score (\S+): (.*)", message)
    if not m:
        return None
    base = _score_path(m.group(1), data)
    if base is None:
        return None
    rest = m.group(2)
    link = re.match(r"'?([^'\s]+)'? is not a scored item", rest)
    if link:
        node: Any = data["scoring"]
        for part in base[1:]:
            node = node[part]
        listed = node.get("items") if isinstance(node, dict) else None
        if isinstance(listed, list) and link.group(1) in [str(x) for x in listed]:
            return (*base, "items", [str(x) for x in listed].index(link.group(1)))
        return (*base, "items")
    if "min_answered" in rest:
        return (*base, "proration", "min_answered")
    return base


def _scoring_location(message: str, data: Any) -> PathKey | None:
    bands = _list(data, "scoring", "bands")
    m = re.match(r"band (\S+): high", message)
    if m:
        i = _index(bands, "code", m.group(1))
        return None if i is None else ("scoring", "bands", i, "high")
    m = re.match(r"bands (\S+) and (\S+) overlap", message)
    if m:
        i = _index(bands, "code", m.group(2))
        return None if i is None else ("scoring", "bands", i, "low")
    if "score ids must be unique" in message:
        seen: set[str] = set()
        total = data["scoring"].get("total") if isinstance(data["scoring"], dict) else None
        if isinstance(total, dict):
            seen.add(str(total.get("id")))
        for j, sub in enumerate(_list(data, "scoring", "subscales")):
            sid = str(sub.get("id")) if isinstance(sub, dict) else ""
            if sid in seen:
                return ("scoring", "subscales", j, "id")
            seen.add(sid)
    return None


_INSTRUMENT_RULES: tuple[Callable[[str, Any], PathKey | None], ...] = (
    _item_rule,
    _duplicate_rule,
    _score_rule,
)
