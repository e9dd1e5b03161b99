"""jsonbytes.compact writes what the standard library writes, byte for byte, or fails as it
does: request bodies and the content hashes kept in state stores depend on it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alliance_fhir.adapters.fhirjson import content_hash, dumps
from alliance_fhir.adapters.response import content_key
from alliance_fhir.jsonbytes import compact


def stdlib(value: Any, **options: Any) -> bytes | type[BaseException]:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), **options).encode()
    except (TypeError, ValueError) as error:  # UnicodeEncodeError is a ValueError
        return type(error)


def ours(value: Any, **options: Any) -> bytes | type[BaseException]:
    try:
        return compact(value, **options)
    except (TypeError, ValueError) as error:
        return type(error)


# every float magnitude, the ones orjson writes otherwise (1e-9..1e-5) among them
floats = st.floats(allow_nan=True, allow_infinity=True) | st.builds(
    lambda m, e: m * 10.0**e, st.floats(-10, 10), st.integers(-12, -3)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | floats
    | st.text(st.characters(codec=None))  # lone surrogates too
)
keys = st.text(st.characters(codec=None), max_size=6)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(json_values, st.booleans())
def test_the_same_bytes_or_the_same_error_as_the_standard_library(value: Any, sort: bool) -> None:
    assert ours(value, sort_keys=sort) == stdlib(value, sort_keys=sort)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_without_nan_it_refuses_what_the_standard_library_refuses(value: Any) -> None:
    assert ours(value, allow_nan=False) == stdlib(value, allow_nan=False)


@pytest.mark.parametrize(
    "value",
    [
        1e-05,
        -1.5e-07,
        9.99e-10,
        1e-10,
        0.0001,
        1e16,
        -0.0,
        [1e-6, "x"],
        {"valueDecimal": 2.5e-8},
        float("nan"),
        float("-inf"),
        2**64,
        {1: "a"},
        {"a": None},
        "\ud800",
        # strings that look like the floats orjson writes otherwise: same bytes either way
        "ab3e-4f",
        {"a": ":1e-5,"},
        ["0.00001", "urn:uuid:1b2e-4a6c"],
    ],
)
def test_the_values_orjson_writes_otherwise(value: Any) -> None:
    assert ours(value) == stdlib(value)
    assert ours(value, sort_keys=True) == stdlib(value, sort_keys=True)


def test_types_the_standard_library_refuses_are_refused() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    for value in (dt.date(2026, 12, 1), dt.datetime(2026, 12, 1, 9, 30), Point(1)):
        assert ours({"v": value}) is TypeError


def test_str_enums_are_written_as_their_text() -> None:
    class Status(StrEnum):
        ACTIVE = "active"

    body = {"status": Status.ACTIVE, Status.ACTIVE: [Status.ACTIVE]}
    assert compact(body) == stdlib(body) == b'{"status":"active","active":["active"]}'


def test_a_default_is_used_as_the_standard_library_uses_it() -> None:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return float(value)
        raise TypeError(type(value).__name__)

    body = {"value": Decimal("3.25"), "small": Decimal("0.000002")}
    assert compact(body, default=default) == stdlib(body, default=default)


def test_a_resource_hashes_and_dumps_as_before() -> None:
    """The digest the standard library gave (what state stores already hold)."""
    resource = {
        "resourceType": "Observation",
        "id": "server-1",
        "meta": {"versionId": "2"},
        "status": "final",
        "valueQuantity": {"value": 4.5e-06, "unit": "score"},
        "note": [{"text": "Élan — 3e-4, ok"}],
        "component": [{"valueInteger": 7}],
    }
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert content_hash(resource) == hashlib.sha256(canonical.encode()).hexdigest()
    assert dumps(resource) == json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
    with pytest.raises(ValueError, match="Out of range float values"):
        dumps({"value": math.nan})


def test_a_responses_content_key_is_the_one_earlier_versions_gave() -> None:
    """The key becomes our identifier on the server: the same form must keep it."""
    qr = {
        "resourceType": "QuestionnaireResponse",
        "id": "x",
        "text": {"div": "<div/>"},
        "authored": dt.date(2026, 11, 30),  # YAML gives a date object
        "item": [{"linkId": "1", "answer": [{"valueString": "Élan, ça va"}]}],
        "score": Decimal("2.5"),
    }
    body = {k: v for k, v in qr.items() if k not in ("id", "meta", "text")}
    before = json.dumps(
        body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    expected = "qr-" + hashlib.sha256(before.encode()).hexdigest()[:40]
    assert content_key(qr) == expected
