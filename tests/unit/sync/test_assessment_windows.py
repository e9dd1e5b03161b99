"""A streamed sync maps a large file a part at a time (``app.records.assessment_windows``),
so sending starts before the whole file is mapped: the records, their order and the file's
fingerprint are exactly those of mapping the file at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alliance_fhir.adapters.record import Desired
from alliance_fhir.app.fingerprints import SourceIndex
from alliance_fhir.app.records import assessment_files_records, assessment_windows
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.state import StateStore

REPO = Path(__file__).resolve().parents[3]
CSV = REPO / "examples" / "clinic" / "assessments" / "session-ratings.csv"


def _ids(desired: Sequence[Desired]) -> list[tuple[str, str, str | None]]:
    return [(d.kind, d.key, d.hash) for d in desired]


def test_a_large_file_is_cut_into_windows_with_the_records_of_mapping_it_whole(
    tmp_path: Path,
) -> None:
    settings = Settings(state_path=tmp_path / "state.sqlite3")
    library = load_library([])
    whole = assessment_files_records([CSV], library, settings)
    assert not whole.problems
    assert len(whole.desired) > 20

    with StateStore(tmp_path / "state.sqlite3") as store:
        sources = SourceIndex(store, "context", settings)
        windows = list(assessment_windows([CSV], library, settings, size=8, sources=sources))
        assert len(windows) >= len(whole.desired) // 10  # one file, many windows
        # parts of 4 assessments (2 records each, 1 if not scored) until a window has >= 8
        assert all(len(w.desired) < 8 + 2 * 4 for w in windows)
        streamed = [d for w in windows for d in w.desired]
        assert _ids(streamed) == _ids(whole.desired)
        assert [d.resource for d in streamed] == [d.resource for d in whole.desired]
        # the file's fingerprint holds every record, not the last part's
        (found,) = store.source_fingerprints().values()
        assert [(kind, key, h) for kind, key, h, _ in found.records] == _ids(whole.desired)


def test_the_first_window_is_one_bundle_so_sending_starts_early(tmp_path: Path) -> None:
    """A first sync sends nothing of the assessments before their first window is mapped:
    that window is ``bundle_size`` records, the later ones ``size``; the records are the same."""
    settings = Settings(state_path=tmp_path / "state.sqlite3", bundle_size=6)
    library = load_library([])
    whole = assessment_files_records([CSV], library, settings)
    windows = list(assessment_windows([CSV], library, settings, size=16))
    sizes = [len(w.desired) for w in windows]
    # parts of 3 assessments (2 records each, 1 if not scored) until a window has >= 6,
    # then parts of 3 until one has >= 16
    assert 6 <= sizes[0] < 6 + 2 * 3
    assert all(16 <= n < 16 + 2 * 3 for n in sizes[1:-1])
    assert _ids([d for w in windows for d in w.desired]) == _ids(whole.desired)


def test_only_the_window_after_the_last_file_is_marked_last(tmp_path: Path) -> None:
    """``push assessments`` says nothing follows its windows: the trailing one is marked (its
    bundles are cut finer); a sync, whose goal plans follow, marks none."""
    settings = Settings(state_path=tmp_path / "state.sqlite3", bundle_size=6)
    library = load_library([])
    pushed = list(assessment_windows([CSV], library, settings, size=16, last=True))
    synced = list(assessment_windows([CSV], library, settings, size=16))
    assert len(pushed) > 2
    assert [w.last for w in pushed] == [False] * (len(pushed) - 1) + [True]
    assert not any(w.last for w in synced)
