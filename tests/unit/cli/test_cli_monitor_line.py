"""The monitor's summary line counts the responses it did not score (and withdrew)."""

from __future__ import annotations

import pytest

from alliance_fhir.api import MonitorResult
from alliance_fhir.cli.render import print_monitor


def test_the_summary_counts_not_scored_and_withdrawn_and_lists_each(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = "QuestionnaireResponse/9: heard: coding from http://snomed.info/sct, not ours"
    result = MonitorResult(pulled=3, external=1, not_scored=[line], withdrawn=1)
    print_monitor(result)
    out, err = capsys.readouterr()
    assert out == (
        "monitor: pulled 3 responses (1 completed elsewhere scored, 1 not scored, 1 withdrawn);"
        " 0 patients evaluated; alerts: none\n"
    )
    assert err == f"not scored: {line}\n"


def test_a_run_that_withdrew_nothing_does_not_mention_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_monitor(MonitorResult(pulled=2))
    out, _ = capsys.readouterr()
    assert out == (
        "monitor: pulled 2 responses (0 completed elsewhere scored, 0 not scored);"
        " 0 patients evaluated; alerts: none\n"
    )
