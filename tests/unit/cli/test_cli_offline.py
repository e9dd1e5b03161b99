"""The CLI without a server: listing, rendering, scoring, validating, exporting bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clikit import Run

from alliance_fhir.api import AllianceFhir

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "examples"
NOWHERE = ["--server-url", "http://127.0.0.1:9/fhir"]  # nothing listens: no request is made


def test_instruments_list_shows_the_five_ids_first(run: Run) -> None:
    result = run("instruments", "list")
    assert result.code == 0
    assert result.err == ""
    ids = [line.split()[0] for line in result.out.splitlines()]
    assert ids == ["ors", "srs", "trc-client", "trc-clinician", "wai-sr"]


def test_render_of_a_licensed_instrument_needs_an_overlay_or_labels_only(run: Run) -> None:
    refused = run("instruments", "render", "wai-sr")
    assert refused.code == 2
    assert refused.out == ""
    assert len(refused.err.splitlines()) == 1
    assert refused.err.startswith("error: wai-sr: the wording of this instrument is licensed")
    assert "--overlay" in refused.err
    assert "--labels-only" in refused.err
    rendered = run("instruments", "render", "wai-sr", "--labels-only")
    assert rendered.code == 0
    assert json.loads(rendered.out)["resourceType"] == "Questionnaire"


@pytest.mark.parametrize("instrument_id", ["trc-client", "trc-clinician"])
def test_labels_only_renders_our_own_instrument_unchanged(run: Run, instrument_id: str) -> None:
    plain = run("instruments", "render", instrument_id)
    labels = run("instruments", "render", instrument_id, "--labels-only")
    assert (plain.code, labels.code) == (0, 0)
    assert labels.out == plain.out
    first = {"trc-client": "When I talk, I feel", "trc-clinician": "I had a good sense"}
    assert first[instrument_id] in plain.out


def test_show_of_an_unknown_instrument_exits_2_naming_the_known_ones(run: Run) -> None:
    result = run("instruments", "show", "nope")
    assert result.code == 2
    assert result.out == ""
    assert result.err == (
        "error: unknown instrument 'nope'; known instruments: "
        "ors, srs, trc-client, trc-clinician, wai-sr\n"
    )


def test_rendering_is_byte_identical_across_runs(run: Run) -> None:
    first = run("instruments", "render", "trc-client")
    second = run("instruments", "render", "trc-client")
    assert (first.code, second.code) == (0, 0)
    assert json.loads(first.out)["resourceType"] == "Questionnaire"
    assert first.out == second.out


def test_score_reports_bad_records_with_file_and_line_and_scores_the_rest(
    run: Run, tmp_path: Path
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
    result = run("score", str(bad))
    assert result.code == 1
    assert "ok-1" in result.out
    assert "36.5" in result.out
    assert "bad-1" not in result.out
    [line] = result.err.splitlines()
    assert line.startswith(f"error: {bad}:")
    assert "q1" in line
    assert "Traceback" not in result.err


def test_push_out_writes_conditional_transaction_bundles_without_a_server(
    run: Run, tmp_path: Path
) -> None:
    out_dir = tmp_path / "bundles"
    source = str(EXAMPLES / "clinic" / "assessments")
    result = run(*NOWHERE, "push", "assessments", source, "--out", str(out_dir))
    assert result.code == 0, result.err
    files = sorted(out_dir.glob("bundle-*.json"))
    assert files
    assert result.out == f"wrote {len(files)} bundle file(s) to {out_dir}\n"
    bundle = json.loads(files[0].read_text())
    assert bundle["type"] == "transaction"
    request = bundle["entry"][0]["request"]
    assert request["method"] == "PUT"
    assert "?identifier=" in request["url"]
    again = tmp_path / "again"
    second = run(*NOWHERE, "push", "assessments", source, "--out", str(again))
    assert second.code == 0, second.err
    assert second.out == f"wrote {len(files)} bundle file(s) to {again}\n"
    assert [f.read_bytes() for f in files] == [(again / f.name).read_bytes() for f in files]


def test_dry_run_plans_without_writing(run: Run, tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite3"
    result = run(
        *NOWHERE, "--state", str(state), "push", "goals", str(EXAMPLES / "goals"), "--dry-run"
    )
    assert result.code == 0, result.err
    [line] = result.out.splitlines()
    assert line.startswith("plan: create ")
    status = run("--state", str(state), "status")
    assert status.code == 0
    assert "records: none\n" in status.out


def test_config_show_masks_secrets(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_TOKEN", "s3cr3t-token-value")
    result = run("config", "show")
    assert result.code == 0
    assert "s3cr3t-token-value" not in result.out
    assert json.loads(result.out)["token"] == "********"


def test_validate_names_file_line_and_path_of_a_malformed_instrument(
    run: Run, tmp_path: Path
) -> None:
    src = (REPO / "mappings" / "instruments" / "srs.yaml").read_text()
    broken = tmp_path / "srs-broken.yaml"
    broken.write_text(src.replace("type: decimal", "type: slider", 1))
    result = run("validate", str(broken))
    assert result.code == 1
    assert result.out == ""
    assert str(broken) in result.err
    assert "items[0].type" in result.err
    fine = run("validate", str(REPO / "mappings"))
    assert fine.code == 0
    assert fine.out == "ok: 1 path(s) valid\n"


def test_report_prints_each_file_the_api_wrote(
    run: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[str, Path, Path | None]] = []

    def write_report(
        self: AllianceFhir, patient: str, out: Path, *, png: Path | None = None
    ) -> list[Path]:
        calls.append((patient, out, png))
        return [out, *([png] if png else [])]

    monkeypatch.setattr(AllianceFhir, "write_report", write_report)
    result = run("report", "--patient", "urn:mrn|M-1", "--out", "r.html", "--png", "r.png")
    assert result.code == 0
    assert calls == [("urn:mrn|M-1", Path("r.html"), Path("r.png"))]
    assert result.out == "wrote r.html\nwrote r.png\n"
