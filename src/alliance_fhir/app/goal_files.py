"""Goal plan files to records, skipping files unchanged since a run that synced them all.

The same rules as assessment files (``app.fingerprints``): the sha256 of a file's bytes and
the goal *context hash* (``goal_context_hash``) decide; a file is skipped only when every
record it made is synced with that content hash, has a server id and no open dead letter; a
file with problems is always read again. A plan key is the key of its CarePlan record, so a
skipped file's plan keys still count for the "defined twice" check.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from alliance_fhir.app.fingerprints import FileDecision, SourceIndex
from alliance_fhir.app.records import Records, expand_inputs, goal_records
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import Problem
from alliance_fhir.goals import Plan, load_plans

__all__ = ["goal_files_records", "read_goal_files"]


@dataclass
class _GoalRead:
    """One goal file's plans and problems, or its skip decision."""

    plans: list[Plan]
    problems: list[Problem]
    decision: FileDecision | None = None


def _plans_by_file(paths: Iterable[Path], sources: SourceIndex | None) -> Iterator[_GoalRead]:
    """Each file's plans; a plan key seen twice is a problem for the second. With
    ``sources``, an unchanged file is not read, yet its plan keys count as seen."""
    roots = list(paths)
    files = expand_inputs(roots)
    decisions = sources.decide(files, roots, goals=True) if sources is not None else {}
    # A skipped file's plan defined again in a file read before it: only reading it reports
    # the duplicate, so it is read after all.
    skipped_keys = {key: path for path, d in decisions.items() for key in d.plan_keys()}
    seen: set[str] = set()
    for path in files:
        decision = decisions.get(path)
        if decision is not None and decision.skip is not None:
            seen.update(decision.plan_keys())
            yield _GoalRead([], [], decision)
            continue
        found, problems = load_plans(path)
        kept: list[Plan] = []
        for plan in found:
            if plan.key in seen:
                problems.append(Problem(str(path), "key", f"plan {plan.key} is defined twice"))
                continue
            seen.add(plan.key)
            later = skipped_keys.get(plan.key)
            if later is not None and later != path:
                decisions[later].skip = None
            kept.append(plan)
        yield _GoalRead(kept, problems, decision)


def read_goal_files(paths: Iterable[Path]) -> tuple[list[Plan], list[Problem]]:
    """Every plan in the files (directories walked); a plan key seen twice is a problem."""
    plans: list[Plan] = []
    problems: list[Problem] = []
    for read in _plans_by_file(paths, None):
        plans.extend(read.plans)
        problems.extend(read.problems)
    return plans, problems


def goal_files_records(
    paths: Iterable[Path], settings: Settings, *, sources: SourceIndex | None = None
) -> Records:
    """Every plan's records, reading problems first (as the CLI prints them); with
    ``sources``, the records of unchanged files are only counted (``Records.unchanged``)."""
    read_problems: list[Problem] = []
    out = Records()
    for read in _plans_by_file(paths, sources):
        decision = read.decision
        if decision is not None and decision.skip is not None:
            assert sources is not None  # a decision comes from it
            sources.skipped_file(decision)
            out.extend(Records(unchanged=len(decision.skip), files_skipped=1))
            continue
        read_problems.extend(read.problems)
        mapped = goal_records(read.plans, settings)
        if sources is not None and decision is not None:
            clean = not (read.problems or mapped.problems)
            sources.read_file(decision, mapped.desired, {}, ((), ()), clean=clean)
        out.extend(mapped)
    out.problems[:0] = read_problems
    if sources is not None:
        sources.finish()
    return out
