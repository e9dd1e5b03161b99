"""A run's garbage collection (``alliance_fhir.heap``): set aside for the run, the
application's own settings back when it ends."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.heap import RUN_THRESHOLD, run_heap

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def app_settings() -> Iterator[tuple[int, int, int]]:
    """The settings of the application embedding us (not Python's defaults, on purpose)."""
    before = gc.get_threshold()
    gc.set_threshold(900, 11, 12)
    yield (900, 11, 12)
    gc.set_threshold(*before)
    gc.unfreeze()


def test_a_run_sets_the_heap_aside_and_gives_it_back(app_settings: tuple[int, int, int]) -> None:
    assert gc.get_freeze_count() == 0
    with run_heap():
        assert gc.get_threshold() == RUN_THRESHOLD
        assert gc.get_freeze_count() > 0
        with run_heap():  # nested (sync runs run_stream): one pause
            assert gc.get_threshold() == RUN_THRESHOLD
        assert gc.get_threshold() == RUN_THRESHOLD
    assert gc.get_threshold() == app_settings
    assert gc.get_freeze_count() == 0


def test_a_run_that_fails_gives_the_settings_back(app_settings: tuple[int, int, int]) -> None:
    with pytest.raises(RuntimeError), run_heap():
        raise RuntimeError("the server went away")
    assert gc.get_threshold() == app_settings
    assert gc.get_freeze_count() == 0


def test_a_heap_the_application_froze_stays_frozen(app_settings: tuple[int, int, int]) -> None:
    gc.freeze()
    with run_heap():
        assert gc.get_threshold() == RUN_THRESHOLD
    assert gc.get_freeze_count() > 0  # not unfrozen by us (objects freed meanwhile leave it)
    assert gc.get_threshold() == app_settings


def test_runs_in_two_threads_end_with_the_last(app_settings: tuple[int, int, int]) -> None:
    first_in, second_done, seen = threading.Event(), threading.Event(), []

    def first() -> None:
        with run_heap():
            first_in.set()
            second_done.wait(10)
            seen.append(gc.get_threshold())  # the other run ended: still ours

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with run_heap():
        pass
    second_done.set()
    thread.join(10)
    assert seen == [RUN_THRESHOLD]
    assert gc.get_threshold() == app_settings
    assert gc.get_freeze_count() == 0


def test_a_sync_runs_inside_the_pause_and_leaves_the_settings_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_settings: tuple[int, int, int]
) -> None:
    """Through the API, as an integration job embedding it calls it (an export: no server)."""
    during: list[tuple[int, int, int]] = []
    real = AllianceFhir.goal_records

    def goal_records(self: AllianceFhir, *args: object, **kwargs: object) -> object:
        during.append(gc.get_threshold())
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AllianceFhir, "goal_records", goal_records)
    settings = Settings(
        state_path=tmp_path / "state.sqlite3",
        assessments=[EXAMPLES / "clinic" / "assessments"],
        goals=[EXAMPLES / "goals"],
    )
    with AllianceFhir(settings) as api:
        report = api.sync(out_dir=tmp_path / "out")
    assert not report.problems
    assert during == [RUN_THRESHOLD]
    assert gc.get_threshold() == app_settings
    assert gc.get_freeze_count() == 0
    assert len(report.written) >= 2  # the bundles of the export
