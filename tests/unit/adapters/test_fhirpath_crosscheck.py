"""Our scorer and the Questionnaire's calculatedExpressions agree, as fhirpath.js computes them.

Every shipped instrument, a set of complete responses (floors, ceilings, reverse-keyed extremes,
mixed answers, decimals with one place) and one incomplete response: fhirpath.js (npm
``fhirpath``, the engine SDC form renderers use) evaluates each hidden score item's expression
with the Questionnaire as ``%questionnaire`` and the QuestionnaireResponse as ``%resource``.
Complete responses must give our scorer's numbers; an incomplete one gives no number
(proration is the scorer's alone).

Needs ``node`` and ``tests/js/node_modules`` (``cd tests/js && npm ci``); without them this
test FAILS with that instruction instead of skipping: the check is the point.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.adapters.assessment import questionnaire_response
from alliance_fhir.adapters.questionnaire import (
    CALCULATED_EXPRESSION,
    questionnaire_from_instrument,
    score_link_id,
)
from alliance_fhir.assessments import Assessment
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.instruments.scoring import score

JS = Path(__file__).resolve().parents[2] / "js"
EVALUATE = JS / "evaluate.js"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js >= 18 to run the fhirpath.js cross-check")
    if not (JS / "node_modules" / "fhirpath").is_dir():
        pytest.fail(
            f"fhirpath.js is not installed: run `cd {JS} && npm ci --no-audit --no-fund` "
            "(the Makefile's `node` target does this)"
        )
    return node


def _evaluate(cases: list[dict[str, Any]]) -> list[dict[str, list[Any]]]:
    proc = subprocess.run(
        [_node(), str(EVALUATE)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"evaluate.js failed: {proc.stderr.strip()}")
    result: list[dict[str, list[Any]]] = json.loads(proc.stdout)
    return result


def _responses(instrument: Instrument) -> list[dict[str, Any]]:
    """Answer sets: all lowest, all highest, alternating, random (seeded), incomplete."""
    rng = random.Random(f"crosscheck-{instrument.id}")
    scored = [i for i in instrument.items if i.type != "text"]

    def pick(item: Any, how: str) -> Any:
        if item.type == "choice":
            points = instrument.scale(item.scale).points
            ordered = sorted(points, key=lambda p: p.value)
            if how == "low":
                return ordered[0].code
            if how == "high":
                return ordered[-1].code
            return rng.choice(points).code
        a = item.analogue
        if how == "low":
            return a.min
        if how == "high":
            return a.max
        steps = round((a.max - a.min) * 10**a.decimals)
        return round(a.min + rng.randint(0, steps) / 10**a.decimals, a.decimals)

    sets = [
        {i.link_id: pick(i, "low") for i in scored},
        {i.link_id: pick(i, "high") for i in scored},
        {i.link_id: pick(i, "low" if n % 2 else "high") for n, i in enumerate(scored)},
        *({i.link_id: pick(i, "any") for i in scored} for _ in range(5)),
    ]
    incomplete = dict(sets[-1])
    incomplete.pop(
        instrument.scoring.total and instrument.score_items(instrument.scoring.total)[0].link_id
    )
    return [*sets, incomplete]


Refs = Callable[[str, str], Mapping[str, Any]]


def test_fhirpath_expressions_agree_with_our_scorer(library: InstrumentLibrary, refs: Refs) -> None:
    cases: list[dict[str, Any]] = []
    expected: list[tuple[str, dict[str, float | None]]] = []
    authored = datetime(2024, 3, 4, 17, 0, tzinfo=timezone(timedelta(hours=-5)))
    for instrument in library.all():
        questionnaire = questionnaire_from_instrument(instrument, labels_only=True)
        expressions = {}
        for item in questionnaire["item"]:
            for ext in item.get("extension", []):
                if ext["url"] == CALCULATED_EXPRESSION:
                    expressions[item["linkId"]] = ext["valueExpression"]["expression"]
        sdefs = [instrument.scoring.total, *instrument.scoring.subscales]
        assert sorted(expressions) == sorted(score_link_id(s) for s in sdefs)
        for n, answers in enumerate(_responses(instrument)):
            complete = all(
                i.link_id in answers for i in instrument.items if i.scored and i.type != "text"
            )
            assessment = Assessment(
                key=f"x-{instrument.id}-{n}",
                instrument=instrument.id,
                patient={"system": "http://example-clinic.org/mrn", "value": "MRN-1001"},
                practitioner={"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
                authored=authored,
                status="completed" if complete else "in-progress",
                answers=answers,
            )
            response = questionnaire_response(assessment, instrument, refs=refs)
            cases.append(
                {"questionnaire": questionnaire, "response": response, "expressions": expressions}
            )
            ours = score(instrument, answers)
            values: dict[str, float | None] = {}
            for sdef, sv in zip(sdefs, (ours.total, *ours.subscales), strict=True):
                whole = all(i.link_id in answers for i in instrument.score_items(sdef))
                # FHIRPath scores complete answers only; proration is the scorer's alone
                values[score_link_id(sdef)] = sv.value if whole else None
            expected.append((f"{instrument.id} #{n}", values))

    results = _evaluate(cases)
    assert len(results) == len(expected)
    checked = 0
    for (label, values), got in zip(expected, results, strict=True):
        for link_id, want in values.items():
            result = got[link_id]
            if want is None:
                assert result == [], f"{label} {link_id}: expected no value, got {result}"
                continue
            assert len(result) == 1, f"{label} {link_id}: expected one value, got {result}"
            assert result[0] == pytest.approx(want, abs=1e-9), f"{label} {link_id}"
            checked += 1
    assert checked >= 5 * 8  # every instrument, every complete response, at least the total
