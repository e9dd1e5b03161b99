"""``alliance-fhir status`` on a state store holding merge conflicts: field names, no values."""

from __future__ import annotations

from pathlib import Path

from clikit import Run

from alliance_fhir.sync.state import StateStore


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
