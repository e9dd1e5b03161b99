"""Goal file fingerprints and pruning the rows of files that are gone, without a server.

The state store is real (SQLite and PostgreSQL); "synced" is what a run would have recorded
after the server took every record. End to end against HAPI: the last tests of
tests/integration/test_source_fingerprints.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from statekit import record_all_synced

from alliance_fhir.app.fingerprints import SourceIndex, context_hash, goal_context_hash
from alliance_fhir.app.goal_files import goal_files_records
from alliance_fhir.app.records import Records
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.state.sources import SourceFingerprint

REPO = Path(__file__).resolve().parents[3]


def _index(store: StateStore, settings: Settings, *, full: bool = False) -> SourceIndex:
    return SourceIndex(
        store,
        context_hash(load_library(), settings),
        settings,
        goal_context=goal_context_hash(settings),
        full=full,
    )


def _goals(tmp_path: Path) -> Path:
    folder = tmp_path / "goals"
    shutil.copytree(REPO / "examples" / "goals", folder)
    return folder


def _run(store: StateStore, settings: Settings, folder: Path, *, full: bool = False) -> Records:
    return goal_files_records([folder], settings, sources=_index(store, settings, full=full))


def test_an_unchanged_synced_goal_file_is_skipped_a_changed_one_read(
    state_store: StateStore, tmp_path: Path
) -> None:
    """On SQLite and on PostgreSQL."""
    store, settings, folder = state_store, Settings(state_path=tmp_path / "s"), _goals(tmp_path)
    first = _run(store, settings, folder)
    assert (first.files_skipped, first.unchanged, first.problems) == (0, 0, [])
    again = _run(store, settings, folder)  # read again: nothing synced yet
    assert again.files_skipped == 0
    assert len(again.desired) == len(first.desired)
    record_all_synced(store, first)
    skipped = _run(store, settings, folder)
    assert (skipped.files_skipped, skipped.unchanged, skipped.desired) == (
        4,
        len(first.desired),
        [],
    )
    plan = folder / "plan-mrn-1002.yaml"
    plan.write_text(plan.read_text() + "# edited: same plan, other bytes\n")
    changed = _run(store, settings, folder)
    assert changed.files_skipped == 3
    assert {d.group for d in changed.desired} == {"plan:" + _key(plan)}
    assert changed.unchanged == len(first.desired) - len(changed.desired)
    full = _run(store, settings, folder, full=True)
    assert (full.files_skipped, len(full.desired)) == (0, len(first.desired))
    other = Settings(state_path=tmp_path / "s", identifier_namespace="urn:x:ns")
    assert _run(store, other, folder).files_skipped == 0  # another context: read


def _key(plan: Path) -> str:
    return next(
        line.split(": ", 1)[1] for line in plan.read_text().splitlines() if line[:5] == "key: "
    )


def test_a_goal_file_with_a_problem_is_read_every_time(
    state_store: StateStore, tmp_path: Path
) -> None:
    store, settings, folder = state_store, Settings(state_path=tmp_path / "s"), _goals(tmp_path)
    copy = folder / "zz-copy.yaml"
    shutil.copy(folder / "plan-mrn-1001.yaml", copy)  # its plan key again: a problem
    first = _run(store, settings, folder)
    assert [p.reason for p in first.problems] == ["plan plan-1001-2024 is defined twice"]
    record_all_synced(store, first)
    again = _run(store, settings, folder)
    assert again.files_skipped == 4  # of 5: the copy with the problem is read again
    assert [p.reason for p in again.problems] == [p.reason for p in first.problems]


def _row(key: str, root: str | None) -> SourceFingerprint:
    return SourceFingerprint(key, 1, 1, 1, "ab" * 32, "cd" * 32, (), ((), ()), root)


def test_rows_of_files_gone_from_a_listed_folder_are_pruned_and_no_others(
    state_store: StateStore, tmp_path: Path
) -> None:
    """On SQLite and on PostgreSQL: a deleted file's row goes; rows of another folder, of
    files named alone and of a folder this run could not list stay."""
    store, settings, folder = state_store, Settings(state_path=tmp_path / "s"), _goals(tmp_path)
    _run(store, settings, folder)
    rows = store.source_fingerprints()
    assert len(rows) == 4
    [root] = {f.root for f in rows.values()}
    assert root is not None
    store.save_source_fingerprints([_row("elsewhere", "other-root"), _row("alone", None)])
    (folder / "plan-mrn-1003.yaml").unlink()
    (folder / "plans-mrn-1004.csv").rename(folder / "renamed.csv")
    index = _index(store, settings)
    goal_files_records([folder], settings, sources=index)
    assert index.pruned == 2
    kept = store.source_fingerprints()
    assert len(kept) == 3 + 2
    assert {k for k, f in kept.items() if f.root is None or f.root == "other-root"} == {
        "elsewhere",
        "alone",
    }
    missing = tmp_path / "unmounted"
    before = store.source_fingerprints()
    shutil.move(folder, missing)
    index = _index(store, settings)
    goal_files_records([folder], settings, sources=index)  # a folder that is not there
    assert index.pruned == 0
    assert store.source_fingerprints().keys() == before.keys()


def test_a_dry_run_prunes_nothing(state_store: StateStore, tmp_path: Path) -> None:
    store, settings, folder = state_store, Settings(state_path=tmp_path / "s"), _goals(tmp_path)
    _run(store, settings, folder)
    (folder / "plan-mrn-1003.yaml").unlink()
    index = _index(store, settings)
    index.remember = False
    goal_files_records([folder], settings, sources=index)
    assert len(store.source_fingerprints()) == 4


def test_rows_from_before_roots_get_theirs_when_their_file_is_skipped(
    state_store: StateStore, tmp_path: Path
) -> None:
    """A store migrated to schema 6 has rows without a root: a run that skips their file
    gives them the folder's, so they are pruned once the file is gone."""
    store, settings, folder = state_store, Settings(state_path=tmp_path / "s"), _goals(tmp_path)
    first = _run(store, settings, folder)
    record_all_synced(store, first)
    rows = store.source_fingerprints()
    store.save_source_fingerprints([_row_without_root(f) for f in rows.values()])
    assert {f.root for f in store.source_fingerprints().values()} == {None}
    assert _run(store, settings, folder).files_skipped == 4
    assert None not in {f.root for f in store.source_fingerprints().values()}
    (folder / "plan-mrn-1001.yaml").unlink()
    _run(store, settings, folder)
    assert len(store.source_fingerprints()) == 3


def _row_without_root(f: SourceFingerprint) -> SourceFingerprint:
    return SourceFingerprint(
        f.path_key, f.size, f.mtime_ns, f.inode, f.sha256, f.context, f.records, f.notes
    )


def test_a_skipped_files_plan_defined_in_a_new_earlier_file_makes_it_read(
    state_store: StateStore, tmp_path: Path
) -> None:
    """The duplicate is reported where reading every file reports it: the later file."""
    store, settings, folder = state_store, Settings(state_path=tmp_path / "s"), _goals(tmp_path)
    record_all_synced(store, _run(store, settings, folder))
    shutil.copy(folder / "plan-mrn-1001.yaml", folder / "aa-first.yaml")
    again = _run(store, settings, folder)
    assert again.files_skipped == 3
    [problem] = again.problems
    assert (Path(problem.location).name, problem.reason) == (
        "plan-mrn-1001.yaml",
        "plan plan-1001-2024 is defined twice",
    )
