"""Runs last (conftest moves it to the end): no log line of the integration suite carries PHI.

``LOG_CAPTURE`` holds every line alliance-fhir emitted while an integration test ran,
whatever stream or level that test configured, plus the stderr of CLI subprocesses (see
``conftest.py``). This module first adds a demo-like run of its own at DEBUG level (seed,
publish, push assessments and goals, pull the goals back, score), so the scan is never of an
empty buffer, then looks for the example clinic's synthetic PHI (names, identifiers, birth
dates of ``examples/clinic/people.json``, free-text answers, goal wording) and for tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from alliance_fhir import log as alog

from .clinickit import EXAMPLES, copy_clinic, make_api
from .conftest import LOG_CAPTURE

TOKEN = "s3cr3t-t0ken-for-the-log-scan"
_BEARER = re.compile(r"(?i)\bbearer\s+(?!\[redacted\])\S+")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


def _people() -> set[str]:
    bundle = json.loads((EXAMPLES / "clinic" / "people.json").read_text(encoding="utf-8"))
    found: set[str] = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for name in resource.get("name") or []:
            found.add(name["family"])
            found.update(name.get("given") or [])
        if resource["resourceType"] == "Patient":
            found.update(i["value"] for i in resource.get("identifier") or [])
        if resource.get("birthDate"):
            found.add(resource["birthDate"])
    return found


def _strings(node: Any, keys: set[str]) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                out.add(value)
            else:
                out |= _strings(value, keys)
    elif isinstance(node, list):
        for value in node:
            out |= _strings(value, keys)
    return out


def _free_text() -> set[str]:
    texts: set[str] = set()
    for path in sorted((EXAMPLES / "clinic" / "assessments").glob("*.yaml")):
        texts |= _strings(yaml.safe_load(path.read_text()), {"do-differently", "notes"})
    for path in sorted((EXAMPLES / "goals").glob("*.yaml")):
        texts |= _strings(yaml.safe_load(path.read_text()), {"client_words", "text"})
    return {t for t in texts if len(t) >= 12}


def _demo_run(base_url: str, tmp_path: Path) -> None:
    examples = copy_clinic(tmp_path)
    stream_lines: list[str] = []

    class Sink:
        def write(self, text: str) -> None:
            stream_lines.append(text)

        def flush(self) -> None:
            return

        def isatty(self) -> bool:
            return False

    alog.configure(level="DEBUG", json=True, stream=Sink())  # type: ignore[arg-type]
    alog.register_sensitive(TOKEN)
    try:
        with make_api(base_url, tmp_path / "scan.sqlite3") as api:
            api.seed(examples / "clinic" / "people.json")
            assert api.publish(labels_only=True).ok
            assert api.push_assessments([examples / "clinic" / "assessments"]).ok
            assert api.push_goals([examples / "goals"]).ok
            api.pull_plans("http://example-clinic.org/mrn|MRN-1001")
            api.score_files([examples / "clinic" / "assessments"])
            alog.get_logger("alliance_fhir.test").info("scan.token", detail=f"Bearer {TOKEN}")
    finally:
        alog.configure(level="WARNING")
    assert stream_lines, "the demo run emitted nothing"


def test_no_log_line_of_the_integration_suite_carries_phi_or_tokens(
    fhir_base_url: str, fhir_reset: Callable[[], None], tmp_path: Path
) -> None:
    before = len(LOG_CAPTURE.lines)
    _demo_run(fhir_base_url, tmp_path)
    lines = list(LOG_CAPTURE.lines)
    assert len(lines) > before + 20, "the capture did not see the demo run's log lines"
    assert any('"fhir.request"' in line for line in lines)
    assert any("sync.done" in line for line in lines)

    needles = _people() | _free_text() | {TOKEN}
    assert {"Okafor", "MRN-1001", "1988-03-14"} <= needles  # the PHI list is really loaded
    leaks = [(needle, line[:200]) for line in lines for needle in needles if needle in line]
    tokens = [line[:200] for line in lines if _BEARER.search(line) or _JWT.search(line)]
    assert not leaks, f"{len(leaks)} PHI hits in {len(lines)} log lines, e.g. {leaks[:3]}"
    assert not tokens, f"tokens in log lines: {tokens[:3]}"
