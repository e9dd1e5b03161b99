"""Bad input: every corpus case yields one precise problem and quarantines only its record.

Each case is written next to a good record file; through the public API the good record
still becomes a desired record, the bad one does not, and the problem names the file, the
line (or JSON path), the field and the reason. Through the CLI (``alliance-fhir score``) the
same input exits non-zero with one ``error:`` line per problem and no traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from alliance_fhir import inputs
from alliance_fhir.api import AllianceFhir
from alliance_fhir.cli import main
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import Problem

from .corpus import ASSESSMENT_CASES, GOOD_ASSESSMENT, Case, srs


@pytest.fixture
def api(tmp_path: Path) -> AllianceFhir:
    return AllianceFhir(Settings(state_path=tmp_path / "state.sqlite3"))


def _batch(tmp_path: Path, case: Case) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-good.yaml").write_text(GOOD_ASSESSMENT, encoding="utf-8")
    (folder / case.filename).write_bytes(case.content)
    return folder


def _inputs(folder: Path, case: Case) -> list[Path]:
    # directories are walked for known suffixes only: name an unsupported file explicitly
    return (
        [folder]
        if Path(case.filename).suffix in (".yaml", ".json", ".csv")
        else [
            folder / "a-good.yaml",
            folder / case.filename,
        ]
    )


def _matches(problem: Problem, case: Case, folder: Path) -> bool:
    return (
        problem.location == str(folder / case.filename)
        and problem.line == case.line
        and problem.field == case.field
        and case.reason in problem.reason
        and (case.path is None or problem.path == case.path)
    )


@pytest.mark.parametrize("case", ASSESSMENT_CASES, ids=[c.id for c in ASSESSMENT_CASES])
def test_each_bad_input_is_one_precise_problem_and_the_rest_proceeds(
    case: Case, tmp_path: Path, api: AllianceFhir
) -> None:
    folder = _batch(tmp_path, case)
    with api:
        records = api.assessment_records(_inputs(folder, case))
    assert len(records.problems) == 1, [str(p) for p in records.problems]
    problem = records.problems[0]
    assert _matches(problem, case, folder), str(problem)
    # the precise one-line form: file:line [field]: reason
    text = str(problem)
    assert text.startswith(str(folder / case.filename))
    if case.line is not None:
        assert f":{case.line}" in text
    keys = {d.key for d in records.desired}
    assert "good-1" in keys  # the rest of the batch proceeds
    if case.quarantined is not None:
        assert case.quarantined not in keys  # the bad record is held back


@pytest.mark.parametrize("case", ASSESSMENT_CASES, ids=[c.id for c in ASSESSMENT_CASES])
def test_cli_prints_one_line_per_problem_and_exits_non_zero(case: Case, tmp_path: Path) -> None:
    folder = _batch(tmp_path, case)
    runner = CliRunner()
    args = ["--state", str(tmp_path / "s.sqlite3"), "score", *map(str, _inputs(folder, case))]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {folder / case.filename}")
    assert "Traceback" not in result.output + result.stderr
    assert "good-1" in result.stdout  # the good record was still scored


def test_a_file_over_the_input_limit_is_refused_before_parsing(
    tmp_path: Path, api: AllianceFhir, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-good.yaml").write_text(GOOD_ASSESSMENT, encoding="utf-8")
    big = srs("big-1") + "# " + "x" * 8000 + "\n"
    (folder / "big.yaml").write_text(big, encoding="utf-8")
    (folder / "big.csv").write_text("record_id\n" + "x" * 8000, encoding="utf-8")
    assert api.library.get("srs")  # the shipped instruments load before the limit drops
    monkeypatch.setattr(inputs, "MAX_INPUT_BYTES", 3000)
    with api:
        records = api.assessment_records([folder])
    assert sorted(p.location.rsplit("/", 1)[-1] for p in records.problems) == [
        "big.csv",
        "big.yaml",
    ]
    for problem in records.problems:
        assert "over the 3000 limit" in problem.reason
    assert [d.key for d in records.desired if d.kind == "assessment"] == ["good-1"]


def test_score_files_keeps_the_good_records_of_a_mixed_batch(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a-good.yaml").write_text(GOOD_ASSESSMENT, encoding="utf-8")
    for case in ASSESSMENT_CASES:
        if Path(case.filename).suffix in (".yaml", ".json", ".csv"):
            (folder / f"{case.id}{Path(case.filename).suffix}").write_bytes(case.content)
    with AllianceFhir(Settings(state_path=tmp_path / "s.sqlite3")) as api:
        scored, problems = api.score_files([folder])
    # the first record of the duplicated pair is good; its repeat is the quarantined one
    assert sorted(s.assessment.key for s in scored) == ["dup-1", "good-1"]
    assert [s.scores.total.value for s in scored] == [pytest.approx(37.2)] * 2
    named = {Path(p.location).stem for p in problems}
    expected = {c.id for c in ASSESSMENT_CASES if Path(c.filename).suffix != ".txt"}
    assert named == expected  # every bad file is named, none is silently dropped


def test_control_characters_never_reach_fhir_json() -> None:
    from alliance_fhir.adapters import fhirjson
    from alliance_fhir.exceptions import InvalidInputError as Invalid

    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "a\x07b"}}
    with pytest.raises(Invalid) as caught:
        fhirjson.validate(resource, source="rec.yaml:3")
    assert [p.path for p in caught.value.problems] == ["Observation.code.text"]
    assert caught.value.problems[0].location == "rec.yaml:3"
