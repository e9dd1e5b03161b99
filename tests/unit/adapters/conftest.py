"""Fixtures of the adapter tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from adapterkit import server_refs

from alliance_fhir.adapters import fhirjson


@pytest.fixture
def refs() -> Callable[[str, str], Mapping[str, Any]]:
    return server_refs


@pytest.fixture
def model_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The resource type of each model validation from here on, with no shape learnt yet."""
    calls: list[str] = []
    real = fhirjson._validate_full

    def counting(resource: dict[str, Any], source: str) -> dict[str, Any]:
        calls.append(str(resource["resourceType"]))
        return real(resource, source)

    monkeypatch.setattr(fhirjson, "_validate_full", counting)
    monkeypatch.setattr(fhirjson, "_SHAPES", type(fhirjson._SHAPES)(fhirjson._model))
    return calls
