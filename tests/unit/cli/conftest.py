"""Run the CLI in-process as a user would, from an empty working directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from clikit import Outcome, Run

from alliance_fhir.cli import main


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.chdir(tmp_path)
    for name in ("ALLIANCE_FHIR_CONFIG", "ALLIANCE_FHIR_LOG_LEVEL", "ALLIANCE_FHIR_LOG_JSON"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str) -> Outcome:
        result = CliRunner().invoke(main, list(args))
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return invoke
