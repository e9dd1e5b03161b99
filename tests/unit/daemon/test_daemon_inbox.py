"""The inbox: which files are taken, when, and where they go (atomic moves, reports)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir import log as alog
from alliance_fhir.adapters.assessment_files import read_assessments
from alliance_fhir.api import Report
from alliance_fhir.daemon.inbox import Inbox, classify, file_ref, is_ignored
from alliance_fhir.exceptions import Problem, RetriableError
from alliance_fhir.log import register_sensitive
from alliance_fhir.sync.engine import SyncResult
from alliance_fhir.sync.state import StateStore


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
        self.store = StateStore(":memory:")

    def _push(self, kind: str, paths: Sequence[Path]) -> Report:
        self.calls.append((kind, list(paths)))
        if self.error is not None:
            raise self.error
        return self.report

    def push_assessments(self, paths: Sequence[Path], *, fingerprints: bool = True) -> Report:
        assert not fingerprints  # an inbox file is taken once: nothing to remember
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
    assert first["file"] == file_ref("bad.yaml")
    assert "bad.yaml" not in text
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


def test_file_rewritten_during_the_push_is_quarantined_not_archived(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    inbox.scan()

    class Rewriting(FakeApi):
        def push_assessments(self, paths: Sequence[Path], *, fingerprints: bool = True) -> Report:
            with path.open("a") as fh:  # a writer that paused longer than the settle time
                fh.write("# more rows\n")
            return super().push_assessments(paths, fingerprints=fingerprints)

    result = inbox.process(Rewriting(), path)  # type: ignore[arg-type]
    assert result.outcome == "failed"
    kept = inbox.failed_dir / "x.yaml"
    assert kept.read_text().endswith("# more rows\n")  # nothing it held is lost
    assert list(inbox.processed_dir.iterdir()) == []
    report = json.loads((inbox.failed_dir / "x.yaml.report.json").read_text())
    assert (
        "changed while it was being processed (its size changed)"
        in (report["problems"][-1]["reason"])
    )


def test_an_unexpected_error_is_bad_input_not_a_retry_forever(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    inbox.scan()
    result = inbox.process(FakeApi(error=ValueError("odd")), path)  # type: ignore[arg-type]
    assert result.outcome == "failed"
    body: dict[str, Any] = json.loads((inbox.failed_dir / "x.yaml.report.json").read_text())
    assert body["problems"][0]["reason"] == "could not be processed (ValueError)"


HOSTILE = {
    "complex-key.yaml": "? [a, b]\n: 1\n",
    "bad-date-key.yaml": "2024-02-30: x\n",
    "huge.json": '{"n": ' + "9" * 6000 + "}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_file_fails_alone_and_the_good_one_beside_it_is_pushed(
    inbox: Inbox, name: str
) -> None:
    bad = _drop(inbox.root, name, HOSTILE[name], age=120)
    good = _drop(inbox.root, "good.yaml", age=60)

    class Reading(FakeApi):
        """Reads the file with the real importer, as AllianceFhir.push_assessments does."""

        def push_assessments(self, paths: Sequence[Path], *, fingerprints: bool = True) -> Report:
            _found, problems, _notes = read_assessments(paths[0])
            self.report = Report(problems=problems, result=_result(created=2))
            return super().push_assessments(paths, fingerprints=fingerprints)

    api = Reading()
    results = [inbox.process(api, p) for p in inbox.scan()]  # type: ignore[arg-type]
    assert [r.outcome for r in results] == ["failed", "processed"]
    assert (inbox.failed_dir / name).exists()
    assert (inbox.processed_dir / "good.yaml").exists()
    assert not bad.exists()
    assert not good.exists()
    report = json.loads((inbox.failed_dir / f"{name}.report.json").read_text())
    assert report["problems"][0]["reason"]


def test_a_long_name_already_archived_gets_a_short_unique_name(inbox: Inbox) -> None:
    name = "x" * 240 + ".yaml"
    api = FakeApi()
    for content in ("assessments: []\n", "assessments: [] # 2\n", "assessments: [] # 3\n"):
        path = _drop(inbox.root, name, content)
        inbox.scan()
        assert inbox.process(api, path).outcome == "processed"  # type: ignore[arg-type]
    names = sorted(p.name for p in inbox.processed_dir.iterdir())
    assert len(names) == 6
    assert all(len(n.encode()) <= 255 for n in names)
    assert len({n for n in names if n.endswith(".yaml")}) == 3
    assert list(inbox.root.glob("*.yaml")) == []


def test_symlinks_and_hard_links_are_refused_with_a_reason(inbox: Inbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text("assessments: []\n")
    old = outside.stat().st_mtime - 60
    os.utime(outside, (old, old))
    (inbox.root / "link.yaml").symlink_to(outside)
    os.utime(inbox.root / "link.yaml", (old, old), follow_symlinks=False)
    os.link(outside, inbox.root / "hard.yaml")
    api = FakeApi()
    results = {p.name: inbox.process(api, p) for p in inbox.scan()}  # type: ignore[arg-type]
    assert api.calls == []
    assert {n: r.outcome for n, r in results.items()} == {
        "hard.yaml": "failed",
        "link.yaml": "failed",
    }
    hard = json.loads((inbox.failed_dir / "hard.yaml.report.json").read_text())
    assert "2 hard links" in hard["problems"][0]["reason"]
    link = json.loads((inbox.failed_dir / "link.yaml.report.json").read_text())
    assert "symbolic links are refused" in link["problems"][0]["reason"]
    assert outside.read_text() == "assessments: []\n"


def test_names_are_logged_and_reported_as_a_hash(inbox: Inbox) -> None:
    stream = io.StringIO()
    alog.configure(level="DEBUG", json=True, stream=stream)
    try:
        path = _drop(inbox.root, "Okafor_Adaeze_plan.yaml")
        inbox.scan()
        inbox.process(FakeApi(), path)  # type: ignore[arg-type]
    finally:
        alog.configure()
    ref = file_ref("Okafor_Adaeze_plan.yaml")
    assert ref.endswith(".yaml")
    assert len(ref) == 17
    report = (inbox.processed_dir / "Okafor_Adaeze_plan.yaml.report.json").read_text()
    assert "Okafor" not in report
    assert ref in report
    assert "Okafor" not in stream.getvalue()
    assert f'"file": "{ref}"' in stream.getvalue()


def test_a_file_that_cannot_be_moved_goes_to_failed(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _drop(inbox.root, "x.yaml")
    inbox.scan()
    real = os.replace

    def refuse_processed(src: Any, dst: Any) -> None:
        if Path(dst).parent == inbox.processed_dir:
            raise OSError(36, "File name too long")
        real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_processed)
    result = inbox.process(FakeApi(), path)  # type: ignore[arg-type]
    assert result.outcome == "failed"
    report = json.loads((inbox.failed_dir / "x.yaml.report.json").read_text())
    assert report["problems"][0]["reason"] == "could not be archived: File name too long"


def test_server_text_in_failures_is_replaced_by_the_redacted_dead_letter(inbox: Inbox) -> None:
    path = _drop(inbox.root, "x.yaml")
    api = FakeApi()
    echo = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "invalid",
                "diagnostics": "Patient MRN-4242 Jane Roe born 1980-02-03 rejected",
                "expression": ["Observation.subject"],
            }
        ],
    }
    reason = "POST /Observation -> 422 Unprocessable Entity: error: Patient MRN-4242 Jane Roe "
    reason += "born 1980-02-03 rejected (Observation.subject)"
    api.store.dead_letter(
        run_id="run1",
        kind="assessment",
        key="k1",
        resource_type="Observation",
        reason=reason,
        http_status=422,
        outcome=echo,
    )
    result = _result(created=1, rejected=1)
    result.failures.append(f"assessment/k1: {reason}")
    api.report = Report(result=result)
    inbox.scan()
    inbox.process(api, path)  # type: ignore[arg-type]
    text = (inbox.failed_dir / "x.yaml.report.json").read_text()
    assert "Jane Roe" not in text
    assert "1980-02-03" not in text
    assert "MRN-4242" not in text
    assert json.loads(text)["failures"] == [
        "assessment/k1: POST /Observation -> 422 Unprocessable Entity: "
        "error: invalid (Observation.subject)"
    ]


def test_archives_and_reports_are_private_under_umask_022(inbox: Inbox) -> None:
    old = os.umask(0o022)
    try:
        box = Inbox(inbox.root.parent / "fresh-inbox")
        box.ensure()
        path = _drop(box.root, "x.yaml")
        path.chmod(0o644)
        box.scan()
        result = box.process(FakeApi(), path)  # type: ignore[arg-type]
    finally:
        os.umask(old)
    assert result.moved_to is not None
    assert result.report_path is not None
    for folder in (box.root, box.processed_dir, box.failed_dir):
        assert folder.stat().st_mode & 0o777 == 0o700
    assert result.moved_to.stat().st_mode & 0o777 == 0o600
    assert result.report_path.stat().st_mode & 0o777 == 0o600
