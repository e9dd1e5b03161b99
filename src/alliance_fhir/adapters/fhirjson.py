"""FHIR JSON as we emit it: validated by the R4B models, serialized byte-for-byte stable.

Adapters build plain dicts (in FHIR's conventional key order) and hand them here. We never
serialize through the models: their output depends on library versions, ours does not.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
from decimal import Decimal
from typing import Any, Literal

from pydantic import ValidationError

from alliance_fhir.adapters import _prevalidated
from alliance_fhir.adapters._shapes import ShapeValidator
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.jsonbytes import compact

#: ``full``: every resource through its fhir.resources model. ``shape``: the model once per
#: shape, then each resource's values checked with the model's own primitive types
#: (:mod:`alliance_fhir.adapters._shapes`); same verdicts, same problems, a fraction of the time.
Validation = Literal["shape", "full"]

_MODULES = {
    "CarePlan": "careplan",
    "CodeSystem": "codesystem",
    "Flag": "flag",
    "Goal": "goal",
    "Observation": "observation",
    "Questionnaire": "questionnaire",
    "QuestionnaireResponse": "questionnaireresponse",
    "Task": "task",
    "Patient": "patient",
    "Practitioner": "practitioner",
    "Bundle": "bundle",
    "OperationOutcome": "operationoutcome",
}


def _model(resource_type: str) -> Any:
    module = _MODULES.get(resource_type, resource_type.lower())
    return getattr(importlib.import_module(f"fhir.resources.R4B.{module}"), resource_type)


def validate(
    resource: dict[str, Any], *, source: str = "<generated>", mode: Validation = "full"
) -> dict[str, Any]:
    """Check ``resource`` against the FHIR R4B model of its type; return it unchanged.

    Raises InvalidInputError naming the JSON path of each problem. ``mode`` says how
    (:data:`Validation`); both accept and refuse the same resources with the same problems.
    """
    if mode == "shape" and isinstance(resource.get("resourceType"), str):
        _SHAPES.validate(resource, lambda r: _validate_full(r, source))
        return resource
    return _validate_full(resource, source)


def validate_shipped(resource: dict[str, Any], *, source: str) -> dict[str, Any]:
    """``validate`` (full) for a resource built from instrument definitions: one the models
    accepted when the shipped list was made (:mod:`._prevalidated`) is not validated again."""
    try:
        listed = _prevalidated.digest(dumps(resource)) in _prevalidated.listed()
    except (TypeError, ValueError):  # not JSON at all: the models say what is wrong
        listed = False
    return resource if listed else _validate_full(resource, source)


def _validate_full(resource: dict[str, Any], source: str) -> dict[str, Any]:
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        raise InvalidInputError(Problem(source, "resourceType", "missing resourceType"))
    bad = _control_characters(resource, rtype)
    if bad:
        raise InvalidInputError(
            [
                Problem(
                    source,
                    path.rsplit(".", 1)[-1],
                    "contains a control character FHIR strings do not allow",
                    path=path,
                )
                for path in bad
            ]
        )
    try:
        _model(rtype).model_validate(resource)
    except (ImportError, AttributeError) as exc:
        raise InvalidInputError(
            Problem(source, "resourceType", f"unknown resource type {rtype!r}")
        ) from exc
    except ValidationError as exc:
        problems = [
            Problem(
                source,
                str(err["loc"][-1]) if err["loc"] else "",
                err["msg"],
                path=_jsonpath(rtype, err["loc"]),
            )
            for err in exc.errors()
        ]
        raise InvalidInputError(problems) from exc
    return resource


_SHAPES = ShapeValidator(_model)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _control_characters(node: Any, path: str) -> list[str]:
    """JSON paths of strings with characters below U+0020 other than tab, CR and LF."""
    if isinstance(node, str):
        return [path] if _CONTROL.search(node) else []
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _control_characters(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _control_characters(v, f"{path}[{i}]")]
    return []


def _jsonpath(rtype: str, loc: tuple[int | str, ...]) -> str:
    out = rtype
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(resource: dict[str, Any], *, indent: int | None = None) -> str:
    """Stable JSON text: same dict in, same bytes out (insertion order, no NaN, UTF-8)."""
    if indent is None:
        return compact(resource, default=_default, allow_nan=False).decode("utf-8")
    return json.dumps(
        resource,
        indent=indent,
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":") if indent is None else (",", ": "),
        default=_default,
    )


def content_hash(resource: dict[str, Any]) -> str:
    """Hash of a resource's content, ignoring server-owned ``id`` and ``meta``."""
    body = (
        {k: v for k, v in resource.items() if k not in ("id", "meta")}
        if "id" in resource or "meta" in resource
        else resource  # ours, before any server saw it: nothing to leave out, no copy
    )
    return hashlib.sha256(compact(body, sort_keys=True, default=_default)).hexdigest()
