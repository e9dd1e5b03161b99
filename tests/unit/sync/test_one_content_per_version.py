"""One canonical content per Questionnaire (url, version): a run that would swap the wording
choice a version was published with (licensee's wording vs ``--labels-only`` labels) is
refused with a problem instead of rewriting the Questionnaire back and forth (#16)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance_fhir.app.records import Records, instrument_records
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.instruments.library import InstrumentLibrary

SRS_KEY = "http://alliance-fhir.org/fhir/Questionnaire/srs|1.0.0"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    overlays = tmp_path / "overlays"
    overlays.mkdir()
    lines = "".join(
        f"  q{n}:\n    text: Licensed line {n}\n    answers: {{low: lo, high: hi}}\n"
        for n in range(1, 5)
    )
    (overlays / "srs.yaml").write_text(
        f"instrument: srs\nlicence_holder: Example Clinic\nitems:\n{lines}", encoding="utf-8"
    )
    return load_settings(server_url="http://127.0.0.1:9/fhir", overlay_dir=overlays)


def _run(
    library: InstrumentLibrary, settings: Settings, labels_only: bool, store: dict[str, str]
) -> Records:
    """One publish's records against a fake state store (key -> hash), then 'written'."""
    records = instrument_records(
        library,
        settings,
        labels_only=labels_only,
        only=["srs", "trc-client"],
        published=lambda _kind, key: store.get(key),
    )
    for d in records.desired:
        store[d.key] = d.hash
    return records


def _keys(records: Records) -> list[str]:
    return [d.key for d in records.desired if d.kind == "questionnaire"]


@pytest.mark.parametrize("first", [False, True])
def test_switching_the_wording_choice_is_refused(
    library: InstrumentLibrary, settings: Settings, first: bool
) -> None:
    store: dict[str, str] = {}
    assert _run(library, settings, first, store).problems == []
    published = store[SRS_KEY]

    switched = _run(library, settings, not first, store)

    assert SRS_KEY not in _keys(switched)
    assert store[SRS_KEY] == published
    [problem] = switched.problems
    before, after = (
        ("neutral labels (--labels-only)", "the licensee's wording")
        if first
        else ("the licensee's wording", "neutral labels (--labels-only)")
    )
    assert str(problem) == (
        f"Questionnaire {SRS_KEY} [wording]: published with {before}; this run would "
        f"replace it with {after} under the same version. One content per version: "
        "publish the way it was published, or give the instrument a new version"
    )
    # our own instrument is the same either way, so it is never refused
    assert "http://alliance-fhir.org/fhir/Questionnaire/trc-client|1.0.0" in _keys(switched)


def test_the_same_choice_again_and_other_changes_pass(
    library: InstrumentLibrary, settings: Settings
) -> None:
    store: dict[str, str] = {}
    _run(library, settings, False, store)
    assert _run(library, settings, False, store).problems == []
    # content published by an older release (neither choice of today) is an ordinary update
    store[SRS_KEY] = "0" * 64
    again = _run(library, settings, True, store)
    assert again.problems == []
    assert SRS_KEY in _keys(again)
