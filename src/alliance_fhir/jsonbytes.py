"""Compact JSON text as UTF-8 bytes, written by orjson and byte-identical to the standard
library's ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``.

Request bodies and content hashes are JSON text of every record a sync writes; the standard
library's encoder was ~a tenth of a first sync's client CPU (issue 15). orjson writes the
same bytes for the JSON a record is made of, but not for everything:

* floats between 1e-9 and 1e-5 (``1e-05`` against orjson's ``0.00001``, ``1e-07`` against
  ``1e-7``);
* NaN and the infinities (``NaN`` against ``null``);
* integers beyond 64 bits, keys that are not strings, lone surrogates (orjson refuses);
* datetimes and dataclasses (orjson writes them; the standard library refuses them).

Those values go to the standard library, so the bytes stay the same (the content hashes a
state store keeps from earlier versions among them). They are found from orjson's output
itself: a ``null``, a number token starting ``0.0000`` or one with a one-digit negative
exponent; strings that merely look so only cost the slower path. One difference is left: orjson
writes a plain ``Enum`` or a ``UUID`` where the standard library raises TypeError; the tool
puts neither in a body (its enums are ``str`` enums, written the same by both).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["compact"]

_PASS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_SORTED = _PASS | orjson.OPT_SORT_KEYS
#: a one-digit negative exponent at the end of a value (strings hold it only by chance)
_ONE_DIGIT_EXPONENT = re.compile(rb"e-\d(?:[,\]}]|\Z)")
#: the same, or ``0.0000``, as a whole number token
_NUMBER_WRITTEN_OTHERWISE = re.compile(
    rb"(?:\A|[:,\[])-?(?:0\.0000|\d+(?:\.\d+)?e-\d(?:[,\]}]|\Z))"
)


def compact(
    value: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = True,
) -> bytes:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=...,
    default=..., allow_nan=...).encode()``: the same bytes, and the same errors but for
    plain enums and UUIDs (see the module's note)."""
    try:
        out = orjson.dumps(value, default=default, option=_SORTED if sort_keys else _PASS)
    except TypeError:  # orjson.JSONEncodeError is one: a value orjson will not write
        out = None
    if out is None or b"null" in out or _float_written_otherwise(out):
        text = json.dumps(
            value,
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=sort_keys,
            default=default,
            allow_nan=allow_nan,
        )
        return text.encode("utf-8")
    return out


def _float_written_otherwise(out: bytes) -> bool:
    """Whether ``out`` may hold a float orjson writes unlike ``float.__repr__``: a number
    token ``0.0000...`` (repr says ``1.5e-05``) or one ending ``e-N`` (repr: ``e-0N``). The
    first test runs over every body at C speed; the exact one only when it finds something."""
    if b"0.0000" not in out and _ONE_DIGIT_EXPONENT.search(out) is None:
        return False
    return _NUMBER_WRITTEN_OTHERWISE.search(out) is not None
