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
exponent; strings that merely look so only cost the slower path.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["compact"]

_PASS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_SORTED = _PASS | orjson.OPT_SORT_KEYS
_MANTISSA = b"0123456789."
_BEFORE_NUMBER = b":,["


def compact(
    value: Any,
    *,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = True,
) -> bytes:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=...,
    default=..., allow_nan=...).encode()``, the same bytes, the same errors."""
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
    token ``0.0000...`` (repr says ``1.5e-05``) or ``...e-N`` with one digit (repr: ``e-0N``)."""
    at = out.find(b"0.0000")
    while at != -1:
        if _token_starts(out, at):
            return True
        at = out.find(b"0.0000", at + 1)
    at = out.find(b"e-")
    while at != -1:
        exponent = out[at + 2 : at + 4]
        if exponent[:1].isdigit() and not exponent[1:].isdigit():
            start = at
            while start > 0 and out[start - 1] in _MANTISSA:
                start -= 1
            if start < at and _token_starts(out, start):
                return True
        at = out.find(b"e-", at + 2)
    return False


def _token_starts(out: bytes, at: int) -> bool:
    """Whether a JSON number token may start at ``at`` (or at the minus just before it):
    what precedes it is the start of the text, ``:``, ``,`` or ``[``."""
    if at > 0 and out[at - 1] == ord("-"):
        at -= 1
    return at == 0 or out[at - 1] in _BEFORE_NUMBER
