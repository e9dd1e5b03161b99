"""``alliance-fhir status`` on a state store holding merge conflicts: field names, no values;
the values only with ``--show-values`` on a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
from clikit import Run
from rich.console import Console

from alliance_fhir.sync.state import StateStore

VALUES = {
    "lifecycleStatus": {"ours": "active", "ehr": "on-hold", "base": "proposed"},
    "target": {"ours": [{"measure": {"text": "Walk the dog"}}], "ehr": None, "base": None},
}


def _conflict(store: StateStore, key: str, fields: tuple[str, ...]) -> None:
    store.record(
        kind="goal",
        key=key,
        resource_type="Goal",
        server_id=f"id-{key}",
        version_id="3",
        content_hash="h",
        status="conflict",
        run_id="r1",
        base={"lifecycleStatus": "active", "description": {"text": "Walk the dog"}},
        conflict_fields=fields,
    )


def test_status_names_the_fields_both_sides_changed_and_never_their_values(
    run: Run, tmp_path: Path
) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
        _conflict(store, "plan/walks", ("lifecycleStatus", "target"))
        _conflict(store, "plan/sister", ())  # a 412 without a merge: no fields known

    result = run("--state", "s.sqlite3", "status")

    assert result.code == 0
    lines = result.out.splitlines()
    assert (
        "  conflict: goal/plan/sister (Goal/id-plan/sister) changed on the server since our "
        "last write; not overwritten"
    ) in lines
    assert (
        "  conflict: goal/plan/walks (Goal/id-plan/walks) changed on the server and by us: "
        "lifecycleStatus, target; not overwritten"
    ) in lines
    assert "Walk the dog" not in result.out
    assert "active" not in result.out


def _with_values(tmp_path: Path) -> None:
    with StateStore(tmp_path / "s.sqlite3") as store:
        _conflict(store, "plan/walks", ("lifecycleStatus", "target"))
        store.set_conflict_values("goal", "plan/walks", VALUES)


def test_show_values_on_a_terminal_prints_ours_the_ehrs_and_the_base(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_values(tmp_path)
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    monkeypatch.setenv("ALLIANCE_FHIR_LOG_LEVEL", "DEBUG")

    result = run("--verbose", "--state", "s.sqlite3", "status", "--show-values")

    assert result.code == 0
    lines = result.out.splitlines()
    assert (
        '  values: goal/plan/walks lifecycleStatus: ours "active" / ehr "on-hold" / base "proposed"'
    ) in lines
    assert (
        '  values: goal/plan/walks target: ours [{"measure":{"text":"Walk the dog"}}] / '
        "ehr - / base -"
    ) in lines
    assert "Walk the dog" not in result.err  # nothing of it logged
    assert "on-hold" not in result.err


def test_show_values_into_a_pipe_is_refused_in_one_line(run: Run, tmp_path: Path) -> None:
    _with_values(tmp_path)

    result = run("--state", "s.sqlite3", "status", "--show-values")

    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        "status --show-values: refused: the values are patient data and are shown only on an "
        "interactive terminal (stdout is not one)\n"
    )


def test_values_of_a_conflict_are_forgotten_once_the_record_is_written_again(
    tmp_path: Path,
) -> None:
    _with_values(tmp_path)
    with StateStore(tmp_path / "s.sqlite3") as store:
        assert store.conflict_values("goal", "plan/walks") == VALUES
        store.record(
            kind="goal",
            key="plan/walks",
            resource_type="Goal",
            server_id="id-plan/walks",
            version_id="4",
            content_hash="h2",
            status="synced",
            run_id="r2",
            base={"lifecycleStatus": "active"},
        )
        _conflict(store, "plan/walks", ("lifecycleStatus",))
        assert store.conflict_values("goal", "plan/walks") == {}
