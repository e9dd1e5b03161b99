"""The inbox: which files are taken, when, and where they go (atomic moves, reports)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.api import Report
from alliance_fhir.daemon.inbox import Inbox, classify, is_ignored
from alliance_fhir.exceptions import Problem, RetriableError
from alliance_fhir.log import register_sensitive
from alliance_fhir.sync.engine import SyncResult


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeApi:
    """Stands in for AllianceFhir: records which files were pushed, answers a given report."""

    def __init__(self, report: Report | None = None, error: Exception | None = None) -> None:
        self.report = report or Report(result=_result(created=2))
        self.error = error
        self.calls: list[tuple[str, list[Path]]] = []

    def _push(self, kind: str, paths: Sequence[Path]) -> Report:
        self.calls.append((kind, list(paths)))
        if self.error is not None:
            raise self.error
        return self.report

    def push_assessments(self, paths: Sequence[Path]) -> Report:
        return self._push("assessments", paths)

    def push_goals(self, paths: Sequence[Path]) -> Report:
        return self._push("goals", paths)


def _result(**counts: int) -> SyncResult:
    result = SyncResult(run_id="run1")
    result.counts.update(counts)
    return result


def _drop(folder: Path, name: str, text: str = "assessments: []\n", age: float = 60.0) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    old = path.stat().st_mtime - age
    os.utime(path, (old, old))
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    box = Inbox(tmp_path / "inbox", settle_seconds=2.0)
    box.ensure()
    return box


@pytest.mark.parametrize(
    ("name", "ignored"),
    [
        (".hidden.yaml", True),
        ("upload.yaml.tmp", True),
        ("upload.csv.part", True),
        ("upload.CSV.PART", True),
        ("x.yaml.partial", True),
        ("x.yaml~", True),
        ("~$sheet.csv", True),
        ("session.csv", False),
        ("plan.yaml", False),
    ],
)
def test_names_a_writer_uses_while_writing_are_ignored(name: str, ignored: bool) -> None:
    assert is_ignored(name) is ignored


def test_only_settled_regular_files_are_taken(inbox: Inbox) -> None:
    old = _drop(inbox.root, "old.yaml")
    _drop(inbox.root, "fresh.yaml", age=0.0)
    _drop(inbox.root, ".dot.yaml")
    _drop(inbox.root, "writing.yaml.part")
    (inbox.root / "subdir.yaml").mkdir()
    assert inbox.scan() == [old]
    assert inbox.depth() == 2  # old + fresh: the dotfile and the .part are not inputs yet


def test_a_file_still_growing_is_not_taken_until_it_stops_changing(inbox: Inbox) -> None:
    path = _drop(inbox.root, "growing.csv", "a,b\n")
    clock = Clock(path.stat().st_mtime + 60)
    inbox.wall = clock
    assert inbox.scan() == [path]  # first sight, old enough
    with path.open("a") as fh:  # the writer appends more
        fh.write("1,2\n")
    clock.now = path.stat().st_mtime + 60  # even when its mtime looks old enough...
    assert inbox.scan() == []  # changed since the last scan
    assert inbox.scan() == [path]  # unchanged across two scans


def test_a_fresh_file_waits_for_settle_seconds(inbox: Inbox) -> None:
    path = _drop(inbox.root, "a.yaml", age=0.0)
    clock = Clock(path.stat().st_mtime + 1.0)
    inbox.wall = clock
    assert inbox.scan() == []
    clock.now += 1.5
    assert inbox.scan() == [path]


def test_oldest_file_first(inbox: Inbox) -> None:
    second = _drop(inbox.root, "a.yaml", age=10)
    first = _drop(inbox.root, "b.yaml", age=20)
    assert inbox.scan() == [first, second]


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("plan.yaml", "key: p1\ngoals: []\n", "goals"),
        ("plans.json", '{"plans": []}', "goals"),
        ("checkins.yaml", "assessments: []\n", "assessments"),
        ("one.json", '{"key": "k", "instrument": "srs"}', "assessments"),
        ("goals.csv", "plan,patient,goal,parent\np,MRN,g,\n", "goals"),
        ("ratings.csv", "record_id,instrument,item.q1\n1,srs,5\n", "assessments"),
        ("broken.yaml", "key: [unclosed\n", "assessments"),
        ("notes.txt", "hello", "unsupported"),
    ],
)
def test_what_a_file_holds_is_decided_by_content(
    tmp_path: Path, name: str, text: str, kind: str
) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    assert classify(path) == kind


def test_pushed_file_moves_atomically_to_processed_with_a_report(inbox: Inbox) -> None:
    path = _drop(inbox.root, "checkins.yaml")
    api = FakeApi()
    [ready] = inbox.scan()
    result = inbox.process(api, ready)  # type: ignore[arg-type]
    assert api.calls == [("assessments", [path])]
    assert result.outcome == "processed"
    assert not path.exists()
    moved = inbox.processed_dir / "checkins.yaml"
    assert moved.read_text(encoding="utf-8") == "assessments: []\n"
    report = json.loads((inbox.processed_dir / "checkins.yaml.report.json").read_text())
    assert report["outcome"] == "processed"
    assert report["kind"] == "assessments"
    assert report["counts"]["created"] == 2
    assert report["problems"] == []
    assert report["run_id"] == "run1"
    assert not [p for p in inbox.processed_dir.iterdir() if p.name.endswith(".tmp")]


def test_goal_plans_go_to_push_goals(inbox: Inbox) -> None:
    path = _drop(inbox.root, "plan.yaml", "key: p\ngoals: []\n")
    api = FakeApi()
    inbox.scan()
    inbox.process(api, path)  # type: ignore[arg-type]
    assert api.calls == [("goals", [path])]


def test_bad_input_goes_to_failed_with_phi_free_problems(inbox: Inbox) -> None:
    register_sensitive("Secret Answer Text", "MRN-9999")
    path = _drop(inbox.root, "bad.yaml")
    problems = [
        Problem(str(path), "answers.heard", "'Secret Answer Text' is not on scale", line=7),
        Problem(str(path), "patient", "unknown patient MRN-9999", path="assessments[0]"),
    ]
    api = FakeApi(Report(problems=problems, result=_result(created=1)))
    inbox.scan()
    result = inbox.process(api, path)  # type: ignore[arg-type]
    assert result.outcome == "failed"
    assert (inbox.failed_dir / "bad.yaml").exists()
    text = (inbox.failed_dir / "bad.yaml.report.json").read_text()
    assert "Secret Answer Text" not in text
    assert "MRN-9999" not in text
    report = json.loads(text)
    assert report["counts"]["problems"] == 2
    first = report["problems"][0]
    assert first["file"] == "bad.yaml"
    assert first["line"] == 7
    assert first["field"] == "answers.heard"
    assert "not on scale" in first["reason"]
    assert report["problems"][1]["path"] == "assessments[0]"


def test_records_the_server_rejected_send_the_file_to_failed(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    result = _result(created=1, rejected=1)
    result.failures.append("assessment/k1: HTTP 422 invalid")
    inbox.scan()
    done = inbox.process(FakeApi(Report(result=result)), path)  # type: ignore[arg-type]
    assert done.outcome == "failed"
    report = json.loads((inbox.failed_dir / "x.yaml.report.json").read_text())
    assert report["failures"] == ["assessment/k1: HTTP 422 invalid"]


def test_server_down_leaves_the_file_in_the_inbox(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    inbox.scan()
    api = FakeApi(error=RetriableError("POST /: ConnectError: refused"))
    with pytest.raises(RetriableError):
        inbox.process(api, path)  # type: ignore[arg-type]
    assert path.exists()
    assert list(inbox.failed_dir.iterdir()) == []
    assert list(inbox.processed_dir.iterdir()) == []
    assert inbox.scan() == [path]  # and it is taken again next cycle


def test_unsupported_file_type_is_failed_without_pushing(inbox: Inbox) -> None:
    path = _drop(inbox.root, "notes.txt", "x")
    inbox.scan()
    api = FakeApi()
    result = inbox.process(api, path)  # type: ignore[arg-type]
    assert api.calls == []
    assert result.outcome == "failed"
    report = json.loads((inbox.failed_dir / "notes.txt.report.json").read_text())
    assert "unsupported file type" in report["problems"][0]["reason"]


def test_same_name_dropped_twice_never_overwrites(inbox: Inbox) -> None:
    api = FakeApi()
    for content in ("assessments: []\n", "assessments: []  # second\n"):
        path = _drop(inbox.root, "same.yaml", content)
        inbox.scan()
        inbox.process(api, path)  # type: ignore[arg-type]
    names = sorted(p.name for p in inbox.processed_dir.iterdir())
    assert len(names) == 4  # two files, two reports
    assert "same.yaml" in names
    second = next(n for n in names if n.startswith("same.") and n.endswith("Z.yaml"))
    assert (inbox.processed_dir / second).read_text().endswith("# second\n")
    assert f"{second}.report.json" in names


def test_file_rewritten_during_the_push_stays_for_the_next_cycle(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    inbox.scan()

    class Rewriting(FakeApi):
        def push_assessments(self, paths: Sequence[Path]) -> Report:
            path.write_text("assessments: [] # new\n")
            return super().push_assessments(paths)

    result = inbox.process(Rewriting(), path)  # type: ignore[arg-type]
    assert result.outcome is None
    assert path.exists()


def test_an_unexpected_error_is_bad_input_not_a_retry_forever(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    inbox.scan()
    result = inbox.process(FakeApi(error=ValueError("odd")), path)  # type: ignore[arg-type]
    assert result.outcome == "failed"
    body: dict[str, Any] = json.loads((inbox.failed_dir / "x.yaml.report.json").read_text())
    assert body["problems"][0]["reason"] == "could not be processed (ValueError)"
