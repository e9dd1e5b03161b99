"""A changed file's unchanged records are not mapped again (``app.record_reuse``), and the
instruments' records are not built again (``app.instrument_fingerprint``), without a server.

The state store is real (SQLite and PostgreSQL); "synced" is what a run would have recorded
after the server took every record. "Mapped" is observed with a spy on the mapping step
every read record goes through (the real one still runs). End to end against HAPI:
tests/integration/test_source_fingerprints.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from statekit import record_all_synced

from alliance_fhir.app import records as records_module
from alliance_fhir.app.fingerprints import SourceIndex, context_hash, goal_context_hash
from alliance_fhir.app.instrument_fingerprint import (
    instruments_for_sync,
    instruments_hash,
    unchanged_instruments,
)
from alliance_fhir.app.records import Records, assessment_files_records, instrument_records
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.state import StateStore

REPO = Path(__file__).resolve().parents[3]
CSV = "session-ratings.csv"
#: The CSV's rows: 46 assessments, one of them in progress (no score: a note every run).
ROWS = 46


@pytest.fixture
def mapped(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the assessments the mapping step was given, in order."""
    keys: list[str] = []
    real = records_module.assessment_records

    def spy(assessments: Any, *args: Any) -> Records:
        assessments = list(assessments)
        keys.extend(a.key for a in assessments)
        return real(assessments, *args)

    monkeypatch.setattr(records_module, "assessment_records", spy)
    return keys


def _folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    for name in names or (CSV,):
        shutil.copy(REPO / "examples" / "clinic" / "assessments" / name, folder / name)
    return folder


class Runs:
    """Read and map a folder with one state store, as a sync run does."""

    def __init__(self, store: StateStore, tmp_path: Path, folder: Path, mapped: list[str]):
        self.store, self.folder, self.mapped = store, folder, mapped
        self.settings = Settings(state_path=tmp_path / "s")

    def run(self, *, full: bool = False, settings: Settings | None = None) -> Records:
        self.mapped.clear()
        settings = settings or self.settings
        index = SourceIndex(
            self.store,
            context_hash(load_library(), settings),
            settings,
            goal_context=goal_context_hash(settings),
            full=full,
        )
        return assessment_files_records([self.folder], load_library(), settings, sources=index)

    def synced_run(self) -> Records:
        """A run whose records the server all took."""
        records = self.run()
        record_all_synced(self.store, records)
        return records

    def lines(self) -> dict[str, int | None]:
        [row] = self.store.source_fingerprints().values()
        return {key: line for kind, key, _, line in row.records if kind == "assessment"}


@pytest.fixture
def runs(state_store: StateStore, tmp_path: Path, mapped: list[str]) -> Runs:
    return Runs(state_store, tmp_path, _folder(tmp_path), mapped)


def _rows(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def _total(records: Records) -> int:
    return len(records.desired) + records.unchanged


def test_one_changed_row_is_the_only_record_mapped_again(runs: Runs) -> None:
    """On SQLite and on PostgreSQL."""
    first = runs.synced_run()
    assert len(runs.mapped) == ROWS
    path = runs.folder / CSV
    rows = _rows(path)
    rows[3] = rows[3].replace(",6.6,6.3,6.8,6.3", ",6.6,6.3,6.8,6.4")  # 1002-s01-ors
    path.write_text("".join(rows))
    changed = runs.run()
    # The changed row, and the in-progress one (it gave a note: mapped every time).
    assert runs.mapped == ["1002-s01-ors", "1004-s04-srs"]
    assert [d.key for d in changed.desired] == ["1002-s01-ors", "1002-s01-ors", "1004-s04-srs"]
    assert changed.unchanged == len(first.desired) - 3
    assert changed.files_skipped == 0
    assert changed.skipped == first.skipped  # the in-progress note, said again
    assert {d.hash for d in changed.desired} - {d.hash for d in first.desired} != set()
    record_all_synced(runs.store, changed)
    assert runs.run().files_skipped == 1  # the whole file again


def test_a_record_that_moved_lines_is_reused_and_its_line_is_the_new_one(runs: Runs) -> None:
    runs.synced_run()
    path = runs.folder / CSV
    rows = _rows(path)
    rows[1], rows[2] = rows[2], rows[1]  # 1001-s01-ors and 1001-s01-srs change places
    path.write_text("".join(rows))
    moved = runs.run()
    assert runs.mapped == ["1004-s04-srs"]  # only the in-progress one
    assert moved.problems == []
    assert (runs.lines()["1001-s01-ors"], runs.lines()["1001-s01-srs"]) == (3, 2)


def test_a_record_deleted_from_a_file_leaves_its_row_and_the_rest_are_reused(runs: Runs) -> None:
    first = runs.synced_run()
    path = runs.folder / CSV
    rows = _rows(path)
    del rows[5]  # 1003-s01-ors
    path.write_text("".join(rows))
    after = runs.run()
    assert runs.mapped == ["1004-s04-srs"]
    assert _total(after) == _total(first) - 2
    assert "1003-s01-ors" not in runs.lines()
    assert runs.lines()["1003-s01-srs"] == 6  # one line up


def test_a_changed_definition_maps_every_record_again(runs: Runs) -> None:
    runs.synced_run()
    path = runs.folder / CSV
    path.write_text(path.read_text() + "\n")  # other bytes: the file is read
    other = runs.settings.model_copy(update={"identifier_namespace": "urn:x:other"})
    runs.run(settings=other)
    assert len(runs.mapped) == ROWS
    runs.run(full=True)  # --full: nothing reused either
    assert len(runs.mapped) == ROWS


def test_a_record_not_synced_is_mapped_again(runs: Runs) -> None:
    first = runs.synced_run()
    runs.store.record(
        kind="score",
        key="1002-s02-srs",
        resource_type="Observation",
        server_id="9",
        version_id="2",
        content_hash="someone else's",
        status="conflict",
        run_id="r",
    )
    path = runs.folder / CSV
    path.write_text(path.read_text() + "\n")
    again = runs.run()
    assert runs.mapped == ["1002-s02-srs", "1004-s04-srs"]
    assert _total(again) == _total(first)


def test_a_file_with_a_problem_is_read_every_time_its_good_records_reused(runs: Runs) -> None:
    path = runs.folder / CSV
    rows = _rows(path)
    rows[8] = rows[8].replace(",8.7,9.0,8.7,9.2", ",8.7,19.0,8.7,9.2")  # 1004-s01-srs
    path.write_text("".join(rows))
    first = runs.synced_run()
    assert [p.field for p in first.problems] == ["answers.q2"]
    again = runs.run()
    assert again.files_skipped == 0  # read again: its problem is said again
    assert [str(p) for p in again.problems] == [str(p) for p in first.problems]
    assert runs.mapped == ["1004-s01-srs", "1004-s04-srs"]
    assert _total(again) == _total(first)


def test_a_duplicate_key_from_another_file_is_a_problem_every_time_never_reused(
    runs: Runs,
) -> None:
    runs.synced_run()
    rows = _rows(runs.folder / CSV)
    first = runs.folder / "aa-first.csv"  # read before the CSV: the CSV's copy is the duplicate
    first.write_text(rows[0] + rows[1].replace(",5.4,5.1,5.6,5.3", ",5.4,5.1,5.6,5.4"))
    for _ in range(2):
        dup = runs.run()
        assert [p.reason for p in dup.problems] == [
            f"assessment 1001-s01-ors: duplicate of the record in {first}:2"
        ]
        assert dup.files_skipped == 0  # the unchanged CSV is read: it holds the duplicate
        assert runs.mapped == ["1001-s01-ors", "1004-s04-srs"]  # the new file's, the note's


def test_the_instruments_are_built_again_only_when_what_they_are_built_from_changed(
    state_store: StateStore, tmp_path: Path
) -> None:
    """On SQLite and on PostgreSQL."""
    store, library = state_store, load_library()
    settings = Settings(state_path=tmp_path / "s")
    built_from = instruments_hash(library, settings, labels_only=True)
    builds: list[Records] = []

    def build() -> Records:
        builds.append(instrument_records(library, settings, labels_only=True))
        return builds[-1]

    first = instruments_for_sync(store, built_from, build)
    assert len(builds) == 1
    assert instruments_for_sync(store, built_from, build) is builds[-1]  # not synced yet
    record_all_synced(store, first)
    same = instruments_for_sync(store, built_from, build)
    assert len(builds) == 2
    assert (same.desired, same.unchanged, same.skipped) == ([], len(first.desired), [])
    instruments_for_sync(store, built_from, build, full=True)
    assert len(builds) == 3
    others = {
        instruments_hash(library, settings),  # labels_only
        instruments_hash(library, settings.model_copy(update={"canonical_base": "urn:x:b"})),
    }
    clinic = tmp_path / "mappings"
    (clinic / "rules").mkdir(parents=True)
    text = (REPO / "mappings" / "rules" / "default.yaml").read_text()
    (clinic / "rules" / "clinic.yaml").write_text(text)  # the same rules: no change
    with_rules = settings.model_copy(update={"mappings_dir": clinic})
    assert instruments_hash(library, with_rules, labels_only=True) == built_from
    relabelled = text.replace("label: Relationship check-in below the cutoff", "label: Low", 1)
    (clinic / "rules" / "clinic.yaml").write_text(relabelled)  # a concept of the CodeSystem
    others.add(instruments_hash(library, with_rules, labels_only=True))
    assert built_from not in others
    assert len(others) == 3
    assert unchanged_instruments(store, "another hash") is None
    store.record(
        kind=first.desired[1].kind,
        key=first.desired[1].key,
        resource_type="Questionnaire",
        server_id="q",
        version_id="2",
        content_hash="changed on the server",
        status="conflict",
        run_id="r",
    )
    assert unchanged_instruments(store, built_from) is None


def test_a_file_found_synced_is_skipped_without_comparing_again_until_the_state_changes(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite and on PostgreSQL: the state generation (``sync.state.sources``)."""
    store = runs.store
    first = runs.synced_run()
    compared: list[int] = []
    real = store.synced_hashes

    def spy() -> dict[tuple[str, str], str]:
        compared.append(1)
        return real()

    monkeypatch.setattr(store, "synced_hashes", spy)
    assert runs.run().files_skipped == 1
    assert len(compared) == 1  # compared once, and found all synced
    skipped = runs.run()
    assert (skipped.files_skipped, skipped.unchanged, len(compared)) == (1, _total(first), 1)
    assert skipped.skipped == first.skipped
    store.dead_letter(
        run_id="r",
        kind="score",
        key="1002-s02-srs",
        resource_type="Observation",
        reason="refused",
        http_status=422,
        outcome=None,
    )
    again = runs.run()  # a write since: compared again; that record is not synced now
    assert (again.files_skipped, len(compared)) == (0, 2)
    assert runs.mapped == ["1002-s02-srs", "1004-s04-srs"]


def test_the_state_generation_moves_with_every_committed_write_only(
    state_store: StateStore,
) -> None:
    """On SQLite and on PostgreSQL."""
    store = state_store
    row = {
        "kind": "assessment",
        "key": "a1",
        "resource_type": "QuestionnaireResponse",
        "server_id": "1",
        "version_id": "1",
        "content_hash": "h",
        "status": "synced",
        "run_id": "r",
    }
    start = store.state_generation()
    with store.transaction():
        pass
    assert store.state_generation() == start  # nothing written
    with store.transaction() as db:
        store.record(**row, db=db)
        store.record(**{**row, "key": "a2"}, db=db)
    assert store.state_generation() == start + 1  # one per transaction

    def rolled_back() -> None:
        with store.transaction() as db:
            store.record(**{**row, "key": "a3"}, db=db)
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert store.state_generation() == start + 1
    store.record(**{**row, "status": "conflict"})
    store.resolve_dead_letters("assessment", "a1")
    store.forget_all()
    assert store.state_generation() == start + 4
