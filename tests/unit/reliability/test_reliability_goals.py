"""Goal plans: contradictory statuses are one precise problem each, the plan keeps its other
goals; hostile strings in the client's words are kept verbatim, never interpreted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

PLAN = """\
key: plan-{case}
patient: {{system: http://example-clinic.org/mrn, value: MRN-9001}}
clinicians:
  - http://hl7.org/fhir/sid/us-npi|1234567893
status: active
start: 2024-01-08
goals:
  - key: g1
    client_words: {words}
    proposed_by: client
    lifecycle_status: {life}
{extra}
  - key: g2
    client_words: Keep going.
    proposed_by: client
    lifecycle_status: active
"""

CONTRADICTIONS = [
    ("completed-without-outcome", "completed", "", 8, "achievement_status", "a completed goal"),
    (
        "proposed-but-achieved",
        "proposed",
        "    achievement_status: achieved",
        12,
        "achievement_status",
        "has no achievement status yet",
    ),
    (
        "client-disagrees-but-active",
        "active",
        "    agreement:\n      client: {status: disagree}",
        11,
        "lifecycle_status",
        "the client disagrees",
    ),
    (
        "cancelled-with-open-milestone",
        "cancelled",
        "    milestones:\n      - {key: m1, client_words: step, proposed_by: client,"
        " lifecycle_status: active}",
        13,
        "lifecycle_status",
        "milestone is active but its goal g1 is cancelled",
    ),
    ("unknown-status", "finished", "", 11, "lifecycle_status", "Input should be"),
]


@pytest.mark.parametrize(
    ("case", "life", "extra", "line", "field", "reason"),
    CONTRADICTIONS,
    ids=[c[0] for c in CONTRADICTIONS],
)
def test_contradictory_goal_status_is_one_precise_problem_and_the_plan_goes_on(
    case: str, life: str, extra: str, line: int, field: str, reason: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_text(PLAN.format(case=case, words="Walk daily.", life=life, extra=extra))
    with AllianceFhir(Settings(state_path=tmp_path / "s.sqlite3")) as api:
        records = api.goal_records([path])
    assert len(records.problems) == 1, [str(p) for p in records.problems]
    problem = records.problems[0]
    assert (problem.location, problem.line, problem.field) == (str(path), line, field)
    assert reason in problem.reason
    goals = {d.key for d in records.desired if d.kind == "goal"}
    assert goals == {f"plan-{case}/g2"}  # g1 quarantined, g2 (and the CarePlan) proceed
    assert any(d.kind != "goal" for d in records.desired)


HOSTILE = [
    "<script>alert('x')</script><b>bold</b>",
    "abc\u202edcba",
    "'; DROP TABLE resources; --",
    "{0} {name!r} {__class__} %s %(x)s",
    "x" * 20000,
]


@pytest.mark.parametrize("words", HOSTILE, ids=["html", "rtl", "sql", "format", "long"])
def test_hostile_client_words_are_kept_verbatim(words: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(case="h", words=json.dumps(words), life="active", extra=""))
    with AllianceFhir(Settings(state_path=tmp_path / "s.sqlite3")) as api:
        report = api.push_goals([path], out_dir=tmp_path / "out")
    assert report.problems == []
    bundle = json.loads(report.written[0].read_text(encoding="utf-8"))
    texts = [
        e["resource"]["description"]["text"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Goal"
    ]
    assert words in texts
