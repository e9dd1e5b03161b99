"""Per-instrument lookup tables, built once per instrument object and reused for every record.

Checking and scoring a record used to walk the instrument's lists for every answer (the
item's scale, the scale's codes, a reverse item's range, the items of each score) and to turn
every scale value into an exact fraction again. None of that depends on the record, so it is
done once here. The tables answer only the common case (a choice code that is on its scale);
anything else goes the long way, which is what words the problems.

Exact values are ``int`` where they are whole (most scales), else ``Fraction``: summing ints
is what makes scoring cheap, and ``int`` and ``Fraction`` compare and add exactly alike.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from alliance_fhir.instruments.schema import Instrument, ScoreDef

__all__ = ["MAX_MARKS", "Exact", "InstrumentTables", "exact_number", "tables"]

Exact = int | Fraction

#: Distinct checked marks remembered per decimal item.
MAX_MARKS = 4096
_MAX_CACHED = 256  # instruments are few; a bound keeps a long-lived process from growing


def exact_number(value: int | float) -> Exact:
    """``value`` as an exact number: an int stays an int, a float is read as its repr
    (``7.3`` is 73/10), and a whole result is an int."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number here")
    if isinstance(value, int):
        return value
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    exact = Fraction(Decimal(repr(value)))
    return exact.numerator if exact.denominator == 1 else exact


@dataclass(frozen=True)
class InstrumentTables:
    """What checking and scoring look up per answer, by linkId."""

    #: choice items: the codes of the item's scale, in scale order
    codes: dict[str, tuple[str, ...]]
    #: scored items: answer -> the keyed (reverse-applied) exact value. Choice items: every
    #: code of the scale. Decimal items: filled by the scorer with the marks it has checked
    #: (at most ``MAX_MARKS``; an analogue line has few distinct marks).
    keyed: dict[str, dict[str | int | float, Exact]]
    #: per score id: the linkIds of the items it is computed from, in item order
    score_items: dict[str, tuple[str, ...]]

    def items_of(self, sdef: ScoreDef) -> tuple[str, ...]:
        return self.score_items[sdef.id]


def _build(instrument: Instrument) -> InstrumentTables:
    scales = {s.id: s for s in instrument.scales}
    codes: dict[str, tuple[str, ...]] = {}
    keyed: dict[str, dict[str | int | float, Exact]] = {}
    for item in instrument.items:
        if item.type == "decimal" and item.scored:
            keyed[item.link_id] = {}
        if item.type != "choice" or item.scale is None:
            continue
        scale = scales[item.scale]
        codes[item.link_id] = tuple(p.code for p in scale.points)
        if not item.scored:
            continue  # its answers are checked, never scored: the long way
        values: dict[str | int | float, Exact] = {}
        low, high = exact_number(scale.min_value), exact_number(scale.max_value)
        for point in scale.points:  # codes are unique on a scale (Scale's validator)
            value = exact_number(point.value)
            if item.reverse:
                value = low + high - value
                if isinstance(value, Fraction) and value.denominator == 1:
                    value = value.numerator
            values[point.code] = value
        keyed[item.link_id] = values
    scores = (instrument.scoring.total, *instrument.scoring.subscales)
    score_items = {s.id: tuple(i.link_id for i in instrument.score_items(s)) for s in scores}
    return InstrumentTables(codes, keyed, score_items)


_cache: dict[int, tuple[Instrument, InstrumentTables]] = {}
_lock = threading.Lock()


def tables(instrument: Instrument) -> InstrumentTables:
    """The tables of ``instrument`` (built on first use; instruments are frozen models)."""
    hit = _cache.get(id(instrument))
    if hit is not None and hit[0] is instrument:
        return hit[1]
    built = _build(instrument)
    with _lock:
        if len(_cache) >= _MAX_CACHED:
            _cache.clear()
        # the instrument is kept with its tables so its id cannot be reused while cached
        _cache[id(instrument)] = (instrument, built)
    return built
