"""Validation by shape: fhir.resources once per shape, cheap value checks per resource.

Validating every resource with the fhir.resources models costs most of a mapping's time,
although the adapters give every record of one instrument the same *shape*: the same keys,
nested the same way, the same kinds of values. What the models check splits in two:

* the shape (unknown or missing elements, one choice of ``value[x]``, nulls, list vs
  object, which complex type sits where) - checked once per shape, by validating the first
  resource of that shape with the model;
* each primitive value (a string's characters, a dateTime's form, a code's spacing, an
  integer's range) - checked for every resource, with the very pydantic types the model
  uses for that element (a ``TypeAdapter`` per primitive type), skipped for a value already
  checked at the same place.

A resource that fails any check is validated again with the model, which raises the usual
problems (JSON path, reason): the two ways accept the same resources and say the same things.
Leaves whose type the model cannot tell us (inside a polymorphic ``Resource`` element, or
under an element the model does not know) count as shape: their values are part of it.
"""

from __future__ import annotations

import re
import threading
import types
import typing
from collections.abc import Callable
from itertools import compress
from operator import ne
from typing import Any

from pydantic import TypeAdapter, ValidationError

#: A leaf check: raises on a bad value, returns nothing useful.
Check = Callable[[Any], object]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_SEEN_PER_LEAF = 256  # values remembered as checked, per place in a shape
_MAX_SHAPES = 4096  # shapes remembered (a few per instrument and option set in practice)


class _Shape:
    """One validated shape: per leaf a check, or (no check known) the value it must have."""

    __slots__ = ("checks", "fixed", "seen")

    def __init__(self, checks: list[Check | None], values: list[Any]) -> None:
        self.checks = checks
        self.fixed = values  # compared where there is no check: such values are shape
        self.seen: list[set[Any]] = [
            {v} if c is not None else set() for c, v in zip(checks, values, strict=True)
        ]


class ShapeValidator:
    """Remembers the shapes the model accepted; checks a new resource's values against them.

    ``model_for(resource_type)`` gives the fhir.resources class. ``validate`` takes ``full``,
    the model validation raising our InvalidInputError: it runs for a new shape, and again
    for any resource whose values fail here, so that resource's problems are the model's own.
    """

    def __init__(self, model_for: Callable[[str], Any]) -> None:
        self._model_for = model_for
        self._shapes: dict[tuple[Any, ...], _Shape] = {}
        self._adapters: dict[Any, TypeAdapter[Any]] = {}
        self._lock = threading.Lock()

    def validate(self, resource: dict[str, Any], full: Callable[[dict[str, Any]], object]) -> None:
        tokens: list[Any] = []
        leaves: list[Any] = []
        _flatten(resource, tokens.append, leaves.append)
        key = tuple(tokens)
        shape = self._shapes.get(key)
        if shape is None:
            full(resource)  # raises for a bad resource: nothing is remembered then
            shape = self._learn(resource, leaves)
            with self._lock:
                if len(self._shapes) >= _MAX_SHAPES:
                    self._shapes.clear()
                self._shapes[key] = shape
        elif not _values_ok(shape, leaves):
            full(resource)  # says what is wrong, the model's way

    def _learn(self, resource: dict[str, Any], leaves: list[Any]) -> _Shape:
        """The shape of a resource the model just accepted, with a check per leaf."""
        types: list[Any] = []
        _leaf_types(resource, self._model_for(str(resource["resourceType"])), types)
        if len(types) != len(leaves):  # cannot happen: both walk the same dict the same way
            raise AssertionError("shape walk out of step")
        return _Shape([self._check(t) for t in types], leaves)

    def _check(self, annotation: Any) -> Check | None:
        if annotation is None:
            return None
        with self._lock:
            adapter = self._adapters.get(annotation)
            if adapter is None:
                adapter = TypeAdapter(annotation)
                self._adapters[annotation] = adapter
        return adapter.validate_python


def _values_ok(shape: _Shape, leaves: list[Any]) -> bool:
    """Every leaf equal to the learnt resource's (compared in C), or checked here."""
    fixed, checks, seen = shape.fixed, shape.checks, shape.seen
    for i in compress(range(len(leaves)), map(ne, leaves, fixed)):
        check = checks[i]
        if check is None:
            return False  # a value that is part of the shape differs
        value = leaves[i]
        known = seen[i]
        if value in known:
            continue
        if type(value) is str and _CONTROL.search(value):
            return False
        try:
            check(value)
        except (ValidationError, ValueError, TypeError):
            return False
        if len(known) < _SEEN_PER_LEAF:
            known.add(value)
    return True


_SCALARS = frozenset({str, int, float})
#: A scalar leaf's token: an int and a float are one kind of value (a score of 3 and one of
#: 3.5 in the same place give one shape); the leaf's check still sees the value.
_KIND: dict[type, type] = {str: str, int: float, float: float}


def _flatten(node: Any, token: Callable[[Any], None], leaf: Callable[[Any], None]) -> None:
    """The shape of ``node`` as tokens, and its leaves in order.

    A dict is one token, the tuple of its keys, followed by each value's tokens; a list is
    ``[``, its items' tokens, ``]`` (so the tokens decode one way only). A string or number
    leaf is a type token (its value is checked per resource); any other leaf
    (``resourceType``, booleans, nulls) and the items of a list of primitives are tokens with
    their value: part of the shape. Exact types: a str subclass is shape too. An int and a
    float are one token: the model's number types take both (``3.0`` is an integer, ``3.5``
    is not) and the leaf's check says which; a value equal to the learnt one (``3 == 3.0``)
    is one the model takes in that place too.
    """
    kind = type(node)
    if kind is dict:
        token(tuple(node))  # keys are strings: never equal to a (type, value) token
        for k, v in node.items():
            t = type(v)
            if t is dict or t is list:
                _flatten(v, token, leaf)
            elif t in _SCALARS and k != "resourceType":
                token(_KIND[t])
                leaf(v)
            else:
                token((t, v))
                leaf(v)
    elif kind is list:
        token("[")
        for v in node:
            t = type(v)
            if t is dict or t is list:
                _flatten(v, token, leaf)
            else:
                token((t, v))
                leaf(v)
        token("]")
    else:
        token((kind, node))
        leaf(node)


def _leaf_types(node: dict[str, Any], model: Any, out: list[Any]) -> None:
    """Append, in :func:`_flatten`'s order, the primitive type of each leaf (or None)."""
    fields = _fields_by_alias(model) if model is not None else {}
    for k, v in node.items():
        annotation = fields.get(k)
        if type(v) is dict:
            _leaf_types(v, _complex(annotation), out)
        elif type(v) is list:
            inner = _complex(annotation)
            for item in v:
                if type(item) is dict:
                    _leaf_types(item, inner, out)
                elif type(item) is list:
                    _none_leaves(item, out)
                else:
                    out.append(None)
        elif type(v) in _SCALARS and k != "resourceType":
            out.append(_primitive(annotation))
        else:
            out.append(None)


def _none_leaves(node: Any, out: list[Any]) -> None:
    """A None per leaf of ``node`` (values that are all shape), in :func:`_flatten`'s order."""
    values = node.values() if type(node) is dict else node
    for v in values:
        if type(v) is dict or type(v) is list:
            _none_leaves(v, out)
        else:
            out.append(None)


def _fields_by_alias(model: Any) -> dict[str, Any]:
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}


def _unwrap(annotation: Any) -> Any:
    """``Optional[List[X]]`` -> ``X`` (the element type a value in JSON has)."""
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return None
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006  # the models spell it typing.List
            (annotation,) = typing.get_args(annotation)
        else:
            return annotation


def _complex(annotation: Any) -> Any:
    """The model class of a complex element, or None (unknown, or a polymorphic Resource)."""
    inner = _unwrap(annotation)
    get = getattr(inner, "get_model_klass", None)
    if get is None:
        return None
    try:
        model = get()
    except (ImportError, AttributeError):
        return None
    if getattr(model, "__resource_type__", None) in ("Resource", "DomainResource"):
        return None
    return model if hasattr(model, "model_fields") else None


def _primitive(annotation: Any) -> Any:
    """The ``Annotated[...]`` type of a primitive element, or None when not one."""
    inner = _unwrap(annotation)
    if inner is None or typing.get_origin(inner) is not typing.Annotated:
        return None
    return inner
