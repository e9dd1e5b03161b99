"""The shipped list of prevalidated resources (adapters/_prevalidated.py, make prevalidated)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.adapters import _prevalidated, fhirjson
from alliance_fhir.adapters.questionnaire import questionnaire_from_instrument
from alliance_fhir.app.prevalidate import shipped_resources, shipped_settings
from alliance_fhir.app.records import instrument_records
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.instruments.library import InstrumentLibrary


def _file() -> dict[str, Any]:
    data = json.loads(_prevalidated.LIST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture
def in_use(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The list as the models of its own version see it, whatever version is installed."""
    monkeypatch.setattr(_prevalidated, "models_version", lambda: _file()["fhir.resources"])
    _prevalidated.listed.cache_clear()
    yield
    _prevalidated.listed.cache_clear()


def test_the_list_names_exactly_what_the_shipped_definitions_build() -> None:
    """A changed definition without ``make prevalidated`` fails here, not in a slow sync."""
    built = sorted(shipped_resources())
    assert built == sorted(_file()["digests"]), "definitions changed: run `make prevalidated`"
    assert len(built) >= 2  # the CodeSystem and at least one Questionnaire


def test_every_listed_resource_is_accepted_by_the_installed_models() -> None:
    for resource in shipped_resources().values():
        assert fhirjson.validate(resource, mode="full") is resource


@pytest.mark.usefixtures("in_use")
def test_the_shipped_instruments_cost_no_model_validation(
    library: InstrumentLibrary, model_validations: list[str]
) -> None:
    records = instrument_records(library, shipped_settings(), labels_only=True)
    assert len(records.desired) == len(_file()["digests"])
    assert model_validations == []


@pytest.mark.usefixtures("in_use")
def test_other_settings_or_wording_go_through_the_models(
    library: InstrumentLibrary, model_validations: list[str]
) -> None:
    settings = Settings(server_url="http://127.0.0.1/fhir", canonical_base="https://ehr.example/x")
    records = instrument_records(library, settings, labels_only=True)
    assert model_validations == ["CodeSystem"] + ["Questionnaire"] * (len(records.desired) - 1)


@pytest.mark.usefixtures("in_use")
def test_a_listed_resource_changed_by_one_value_is_refused_by_the_models(
    library: InstrumentLibrary,
) -> None:
    instrument = library.all()[0]
    listed = questionnaire_from_instrument(instrument, labels_only=True)
    assert _prevalidated.digest(fhirjson.dumps(listed)) in _prevalidated.listed()
    changed = dict(listed, status="draft ")  # a code has no trailing space
    with pytest.raises(InvalidInputError) as caught:
        fhirjson.validate_shipped(changed, source="Questionnaire x")
    assert [p.path for p in caught.value.problems] == ["Questionnaire.status"]


def test_a_list_made_with_another_version_of_the_models_is_not_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    other = tmp_path / "prevalidated.json"
    other.write_text(json.dumps(_file() | {"fhir.resources": "0.0.1"}), encoding="utf-8")
    monkeypatch.setattr(_prevalidated, "LIST", other)
    _prevalidated.listed.cache_clear()
    try:
        assert _prevalidated.listed() == frozenset()
        monkeypatch.setattr(_prevalidated, "models_version", lambda: "0.0.1")
        _prevalidated.listed.cache_clear()
        assert _prevalidated.listed() == frozenset(_file()["digests"])
        other.write_text("{not json", encoding="utf-8")
        _prevalidated.listed.cache_clear()
        assert _prevalidated.listed() == frozenset()  # a broken list: the models as before
    finally:
        _prevalidated.listed.cache_clear()
