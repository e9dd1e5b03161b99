"""Reading goal plans from CSV through the documented field map."""

from __future__ import annotations

from typing import Any

from alliance_fhir.goals import load_field_map, load_plans_csv

from .conftest import EXAMPLES

COLUMNS = (
    "plan,patient,clinicians,plan_status,goal,parent,client_words,proposed_by,"
    "lifecycle_status,achievement_status,client_agreement,target_value,target_detail\n"
)


def test_field_map_documents_every_column() -> None:
    fmap = load_field_map()
    assert all(spec.doc for spec in fmap.columns.values())
    assert fmap.columns["clinicians"].list


def test_example_csv_builds_the_milestone_tree() -> None:
    (plan,), problems = load_plans_csv(EXAMPLES / "plans-mrn-1004.csv")
    assert problems == []
    assert plan.patient == "http://example-clinic.org/mrn|MRN-1004"
    assert plan.clinicians == ["http://hl7.org/fhir/sid/us-npi|1245319599"]
    anger, sleep = plan.goals
    assert [m.key for m in anger.milestones] == ["anger-1"]
    assert anger.strengths == ["Honest about what sets him off", "Wants to be a good dad"]
    assert anger.targets[0].low == 0
    assert anger.targets[0].high == 1
    assert anger.gas[0].score == 0
    assert sleep.agreement is not None
    assert sleep.agreement.client is not None
    assert sleep.agreement.client.status == "pending"


def test_bad_rows_name_line_and_column_and_others_proceed(write: Any) -> None:
    path = write(
        "goals.csv",
        COLUMNS
        + "p1,MRN-1,1234567893,active,a,,Walk daily,client,active,,agree,,\n"
        + "p1,,,,b,,Cook more,client,active,,maybe,,\n"
        + "p1,,,,c,,Sleep,client,active,,,7,in bed by 11\n"
        + "p1,,,,d,,Run,client,active,,,,\n"
        + "p1,,,,d1,d,Run 1k,client,proposed,achieved,,,\n"
        + "p1,,,,e1,zzz,Orphan,client,active,,,,\n"
        + "p1,,,,f,,Swim,client,active,,,,\n",
    )
    (plan,), problems = load_plans_csv(path)
    assert [g.key for g in plan.goals] == ["a", "f"]
    found = {(p.line, p.field) for p in problems}
    assert (3, "client_agreement") in found
    assert (4, "target_value") in found
    assert (6, "achievement_status") in found
    assert (7, "parent") in found
    assert (5, "goal") in found  # d left out because its milestone d1 is contradictory
    text = {str(p) for p in problems}
    assert any(t.startswith(f"{path}:3 [client_agreement]:") for t in text)


def test_unknown_column_refuses_the_file(write: Any) -> None:
    path = write("g.csv", COLUMNS.replace("proposed_by", "proposer") + "p1,MRN-1,1,active\n")
    plans, problems = load_plans_csv(path)
    assert plans == []
    assert {(p.line, p.field) for p in problems} == {(1, "proposer")}


def test_conflicting_plan_columns(write: Any) -> None:
    path = write(
        "g.csv",
        COLUMNS
        + "p1,MRN-1,1234567893,active,a,,One,client,active,,,,\n"
        + "p1,MRN-2,,,b,,Two,client,active,,,,\n",
    )
    (plan,), problems = load_plans_csv(path)
    assert [g.key for g in plan.goals] == ["a"]
    assert [(p.line, p.field) for p in problems] == [(3, "patient")]


def test_bad_plan_columns_skip_the_plan(write: Any) -> None:
    path = write(
        "g.csv",
        COLUMNS
        + "p1,MRN-1,1234567893,sideways,a,,One,client,active,,,,\n"
        + "p2,MRN-2,1234567893,active,a,,One,client,active,,,,\n",
    )
    plans, problems = load_plans_csv(path)
    assert [p.key for p in plans] == ["p2"]
    assert [(p.line, p.field) for p in problems] == [(2, "plan_status")]


def test_a_target_without_a_measure_is_refused_naming_its_line(write: Any) -> None:
    # FHIR R4 gol-1: a target with a detail must say what it measures; we say so at input.
    path = write(
        "goals.csv",
        COLUMNS
        + "p1,MRN-1,1234567893,active,a,,Walk daily,client,active,,agree,,\n"
        + "p1,,,,b,,Cook more,client,active,,,4,\n",
    )
    (plan,), problems = load_plans_csv(path)
    assert [g.key for g in plan.goals] == ["a"]
    assert any(p.line == 3 and "needs a measure" in p.reason for p in problems)
