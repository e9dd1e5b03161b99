"""What the CLI prints about server errors and server text: the server's own words
(diagnostics) may echo the request's patient data, so they show only on a terminal with
``--show-server-text``; and nothing printed carries a terminal control sequence."""

from __future__ import annotations

from pathlib import Path

import pytest
from clikit import Run
from rich.console import Console

from alliance_fhir.api import AllianceFhir
from alliance_fhir.app.goal_pull import GoalPull
from alliance_fhir.exceptions import ConfigError, ServerRejectedError
from alliance_fhir.goals import load_plans

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ECHO = "Patient MRN-4242 Jane Roe born 1980-02-03: answer 'I hate mornings' rejected"
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "processing",
            "diagnostics": ECHO,
            "expression": ["Bundle.entry[0].resource"],
        }
    ],
}
WITHHELD = (
    "note: the server's message text is withheld (it may echo patient data); "
    "--show-server-text shows it on a terminal\n"
)


def _status_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def status(self: AllianceFhir, *, runs: int = 10) -> None:
        raise exc

    monkeypatch.setattr(AllianceFhir, "status", status)


def _rejected() -> ServerRejectedError:
    return ServerRejectedError("POST /fhir -> 422", status=422, outcome=OUTCOME)


def test_a_server_error_shows_severity_code_and_expression_not_its_text(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status_raises(monkeypatch, _rejected())
    result = run("--state", "s.sqlite3", "status")
    assert result.code == 1
    assert result.err == (
        "error: POST /fhir -> 422: error: processing (Bundle.entry[0].resource)\n" + WITHHELD
    )


def test_the_flag_does_not_show_server_text_into_a_pipe(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status_raises(monkeypatch, _rejected())
    result = run("--show-server-text", "--state", "s.sqlite3", "status")
    assert result.code == 1
    assert "Jane Roe" not in result.err
    assert result.err.endswith(WITHHELD)


def test_the_flag_shows_server_text_on_a_terminal(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status_raises(monkeypatch, _rejected())
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    result = run("--show-server-text", "--state", "s.sqlite3", "status")
    assert result.code == 1
    assert result.err.splitlines()[-1] == f"server said: {ECHO}"


def test_without_the_flag_a_terminal_gets_no_server_text_either(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status_raises(monkeypatch, _rejected())
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    result = run("--state", "s.sqlite3", "status")
    assert "Jane Roe" not in result.err
    assert "MRN-4242" not in result.err


def test_goal_text_edited_in_the_ehr_cannot_retitle_or_clear_the_terminal(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans, _ = load_plans(EXAMPLES / "goals" / "plan-mrn-1001.yaml")
    hostile = plans[0].model_copy(
        update={"title": "Mornings\x1b]0;owned by the EHR\x07 back\x1b[2J\x9b31m\x00"}
    )

    def pull_goal_plans(self: AllianceFhir, patient: str) -> GoalPull:
        return GoalPull(plans=[hostile], problems=[])

    monkeypatch.setattr(AllianceFhir, "pull_goal_plans", pull_goal_plans)
    result = run("pull", "goals", "--patient", "http://example-clinic.org/mrn|MRN-1001")
    assert result.code == 0
    assert result.out.splitlines()[0] == "Goal plan plan-1001-2024: Mornings back"
    assert not any(ch in result.out for ch in "\x1b\x07\x9b\x00")


def test_our_own_error_lines_carry_no_control_sequence(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _status_raises(monkeypatch, ConfigError("bad value \x1b[31mred\x1b[0m\r\x08 here"))
    result = run("--state", "s.sqlite3", "status")
    assert result.code == 2
    assert result.err == "error: bad value red here\n"
