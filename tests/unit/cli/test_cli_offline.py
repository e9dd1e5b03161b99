"""The CLI without a server: listing, rendering, scoring, validating, exporting bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from alliance_fhir.cli import main

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ALLIANCE_FHIR_CONFIG", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_instruments_list_shows_the_five_ids_first(run) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run("instruments", "list")
    assert code == 0
    ids = [line.split()[0] for line in out.splitlines()]
    assert ids == ["ors", "srs", "trc-client", "trc-clinician", "wai-sr"]


def test_render_of_a_licensed_instrument_needs_an_overlay_or_labels_only(run) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run("instruments", "render", "wai-sr")
    assert code != 0
    assert "licensed" in err
    assert "--labels-only" in err
    code, out, _ = run("instruments", "render", "wai-sr", "--labels-only")
    assert code == 0
    assert json.loads(out)["resourceType"] == "Questionnaire"


def test_rendering_is_byte_identical_across_runs(run) -> None:  # type: ignore[no-untyped-def]
    assert (
        run("instruments", "render", "trc-client")[1]
        == run("instruments", "render", "trc-client")[1]
    )


def test_score_reports_bad_records_with_file_and_line_and_scores_the_rest(
    run,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "assessments:\n"
        "  - key: ok-1\n    instrument: srs\n    authored: 2024-01-01T10:00:00Z\n"
        "    patient: {system: urn:mrn, value: M-1}\n"
        "    answers: {q1: 9.1, q2: 9, q3: 8.5, q4: 9.9}\n"
        "  - key: bad-1\n    instrument: srs\n    authored: 2024-01-01T10:00:00Z\n"
        "    patient: {system: urn:mrn, value: M-1}\n"
        "    answers: {q1: 11, q2: 9, q3: 8.5, q4: 9.9}\n"
    )
    code, out, err = run("score", str(bad))
    assert code == 1
    assert "ok-1" in out
    assert "36.5" in out
    assert f"{bad}:" in err
    assert "q1" in err
    assert "Traceback" not in err


def test_push_out_writes_conditional_transaction_bundles_without_a_server(
    run,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    out_dir = tmp_path / "bundles"
    code, out, _ = run(
        "--server-url",
        "http://127.0.0.1:9/fhir",  # nothing listens there: no request is made
        "push",
        "assessments",
        str(EXAMPLES / "clinic" / "assessments"),
        "--out",
        str(out_dir),
    )
    assert code == 0, out
    files = sorted(out_dir.glob("bundle-*.json"))
    assert files
    bundle = json.loads(files[0].read_text())
    assert bundle["type"] == "transaction"
    request = bundle["entry"][0]["request"]
    assert request["method"] == "PUT"
    assert "?identifier=" in request["url"]
    again = tmp_path / "again"
    run(
        "--server-url",
        "http://127.0.0.1:9/fhir",
        "push",
        "assessments",
        str(EXAMPLES / "clinic" / "assessments"),
        "--out",
        str(again),
    )
    assert files[0].read_bytes() == (again / files[0].name).read_bytes()


def test_dry_run_plans_without_writing(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run(
        "--server-url",
        "http://127.0.0.1:9/fhir",
        "--state",
        str(tmp_path / "s.sqlite3"),
        "push",
        "goals",
        str(EXAMPLES / "goals"),
        "--dry-run",
    )
    assert code == 0, out
    assert "plan: create" in out


def test_config_show_masks_secrets(run, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "s3cr3t-token-value")
    code, out, _ = run("config", "show")
    assert code == 0
    assert "s3cr3t-token-value" not in out
    assert json.loads(out)["token"] == "********"


def test_validate_names_file_line_and_path_of_a_malformed_instrument(
    run,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    src = (REPO / "mappings" / "instruments" / "srs.yaml").read_text()
    broken = tmp_path / "srs-broken.yaml"
    broken.write_text(src.replace("type: decimal", "type: slider", 1))
    code, _, err = run("validate", str(broken))
    assert code == 1
    assert str(broken) in err
    assert "items[0].type" in err
