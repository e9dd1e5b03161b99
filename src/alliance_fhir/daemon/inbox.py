"""The watched inbox folder: files dropped there are pushed, then moved out of the way.

Rules, in the order they matter:

* **Never pick up a half-written file.** Only regular files directly in ``inbox_dir`` with
  an input suffix (``.yaml``/``.yml``/``.json``/``.csv``) are candidates; dotfiles and
  ``*.tmp``/``*.part``/``*.partial``/``*.swp``/``*~`` names are ignored (write under such a
  name, then rename into place: the rename is atomic). A candidate is taken only when its
  modification time is at least ``settle_seconds`` old and its size and mtime did not change
  since the previous scan.
* **Atomic moves.** After the push the file goes to ``processed/`` or ``failed/`` inside the
  inbox with ``os.replace`` (same filesystem, so the file is either here or there, never
  half-copied), followed by ``<name>.report.json`` (written to a temporary name, then
  renamed). A name already taken gets a UTC timestamp suffix, and a name that would pass
  NAME_MAX (with its report suffix) is cut and tagged with a short hash: nothing is
  overwritten, no move fails for length.
* **One file, one fate.** Whatever is wrong with a file itself — a symlink or a file with
  other hard links (refused unread), unreadable, unparseable, an unforeseen check, a change
  between taking it (size, mtime_ns, sha256) and archiving it, a failed move — sends *that*
  file to ``failed/`` with a reason; the cycle goes on.
* **``failed/`` is for the file, not the server.** When the *server* is down, slow or
  refusing us (``FhirError`` other than a rejected record), the file stays in the inbox, the
  error goes up to the cycle (which backs off), and the next cycle tries it again. Writes are
  conditional, so a retried file never duplicates what already landed.
* **PHI-free reports and logs.** Counts, and problems as file / line / path / field / reason,
  with every registered sensitive value masked; never answer text, never the server's
  diagnostics (dead letters' redacted reasons replace them). File names may be people's
  names: logs and reports carry ``file_ref`` (short hash + extension). Archives and reports
  are 0600 in 0700 folders.

What a file holds is decided by content, not by name: a YAML/JSON document with ``goals:``
or ``plans:`` at the top, or a CSV whose header has the goal map's ``plan`` and ``goal``
columns, is a goal plan file; everything else is read as assessments.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alliance_fhir.exceptions import FhirError, InvalidInputError, Problem, StateError
from alliance_fhir.log import get_logger, scrub
from alliance_fhir.private_files import FILE_MODE, fsync_dir, private_dir, write_private

if TYPE_CHECKING:
    from alliance_fhir.api import AllianceFhir, Report

log = get_logger("alliance_fhir.daemon")

INPUT_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".csv"})
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".swx", "~")
PROCESSED = "processed"
FAILED = "failed"
REPORT_SUFFIX = ".report.json"
MAX_REASON = 300
#: Longest archived name in bytes: NAME_MAX (255) less the ``.report.json`` beside it.
_MAX_ARCHIVE_NAME = 255 - len(REPORT_SUFFIX)
_MAX_SUFFIX = 8

Kind = Literal["assessments", "goals", "unsupported"]
Outcome = Literal["processed", "failed"]


def is_ignored(name: str) -> bool:
    """Names a writer uses while a file is incomplete (or hidden): never picked up."""
    lower = name.lower()
    return name.startswith((".", "~$")) or lower.endswith(IGNORED_SUFFIXES)


def classify(path: Path) -> Kind:
    """``goals`` for goal plan files, ``assessments`` for everything else we can read."""
    suffix = path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        return "unsupported"
    if suffix == ".csv":
        try:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                header = next(csv.reader(io.StringIO(fh.readline())), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return "assessments"  # the importer reports why it cannot be read
        columns = {c.strip().lower() for c in header}
        return "goals" if {"plan", "goal"} <= columns else "assessments"
    from alliance_fhir.inputs import load_document

    try:
        data, _ = load_document(path)
    except (InvalidInputError, OSError):
        return "assessments"
    if isinstance(data, dict) and ("goals" in data or "plans" in data):
        return "goals"
    return "assessments"


@dataclass(frozen=True)
class _Seen:
    size: int
    mtime_ns: int


@dataclass
class FileResult:
    """What happened to one inbox file (``outcome`` None: left in the inbox to retry)."""

    name: str
    kind: Kind
    outcome: Outcome | None
    counts: dict[str, int] = field(default_factory=dict)
    moved_to: Path | None = None
    report_path: Path | None = None


def _now_iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _problem_json(problem: Problem, source: Path) -> dict[str, Any]:
    location = problem.location
    if location == str(source) or Path(location).name == source.name:
        location = file_ref(source.name)
    reason = scrub(problem.reason)
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return {
        "file": scrub(location),
        "line": problem.line,
        "path": scrub(problem.path) if problem.path else None,
        "field": scrub(problem.field),
        "reason": reason,
    }


def _short(text: str) -> str:
    text = scrub(text)
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class _Refused(Exception):
    """This file cannot be taken as it is (a link, unreadable, changed): ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Taken:
    """What a file was when we took it: any difference at archive time means it changed."""

    size: int
    mtime_ns: int
    sha256: str

    def differs(self, path: Path) -> str | None:
        """Which of size / mtime / sha256 changed (or the file is gone), else None."""
        try:
            st = path.lstat()
        except OSError:
            return "it disappeared"
        if st.st_size != self.size:
            return "its size changed"
        if st.st_mtime_ns != self.mtime_ns:
            return "its modification time changed"
        if _sha256(path) != self.sha256:
            return "its content changed"
        return None


class Inbox:
    """One inbox directory with its ``processed/`` and ``failed/`` folders."""

    def __init__(
        self,
        root: Path,
        *,
        settle_seconds: float = 2.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.settle_seconds = settle_seconds
        self.wall = wall
        self.processed_dir = self.root / PROCESSED
        self.failed_dir = self.root / FAILED
        self._seen: dict[str, _Seen] = {}

    def ensure(self) -> None:
        for folder in (self.root, self.processed_dir, self.failed_dir):
            private_dir(folder)

    def _candidates(self) -> list[tuple[Path, os.stat_result]]:
        """Regular files and symlinks (refused later, with a reason) directly in the inbox."""
        out: list[tuple[Path, os.stat_result]] = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for entry in entries:
            if is_ignored(entry.name):
                continue
            try:
                if not (entry.is_file(follow_symlinks=False) or entry.is_symlink()):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # moved away between scandir and stat
            out.append((Path(entry.path), st))
        return out

    def depth(self) -> int:
        """Files waiting (including ones not yet settled)."""
        return len(self._candidates())

    def scan(self) -> list[Path]:
        """Settled files, oldest first. Each call is one observation for the stability rule."""
        now = self.wall()
        ready: list[tuple[int, str, Path]] = []
        current: dict[str, _Seen] = {}
        for path, st in self._candidates():
            seen = _Seen(st.st_size, st.st_mtime_ns)
            current[path.name] = seen
            previous = self._seen.get(path.name)
            if previous is not None and previous != seen:
                continue  # still growing or being rewritten
            if now - st.st_mtime < self.settle_seconds:
                continue  # too fresh: the writer may not be done
            ready.append((st.st_mtime_ns, path.name, path))
        self._seen = current
        return [p for _, _, p in sorted(ready)]

    def changed_since_scan(self, path: Path) -> bool:
        previous = self._seen.get(path.name)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return True
        return previous is None or previous != _Seen(st.st_size, st.st_mtime_ns)

    # Processing

    def process(self, api: AllianceFhir, path: Path) -> FileResult:
        """Push one settled file and move it to processed/ or failed/ with its report.

        Raises ``FhirError``/``StateError`` (server or state trouble) with the file left in
        place: the caller backs off and the next cycle retries it. Anything wrong with the
        file itself (a link, unreadable, unparseable, changed while we held it, a move that
        fails) sends that file to failed/ with a reason; the cycle goes on.
        """
        ref = file_ref(path.name)
        started = self.wall()
        if self.changed_since_scan(path):
            # rewritten since the scan saw it settled: not taken yet, the next scan decides.
            log.warning("daemon.inbox_changed_before_take", file=ref)
            return FileResult(path.name, "unsupported", None)
        try:
            taken = _take(path)
        except _Refused as exc:
            log.warning("daemon.inbox_refused", file=ref, reason=exc.reason)
            return self._finish(path, "unsupported", started, None, [_reason(ref, exc.reason)])
        kind: Kind = "unsupported"
        report: Report | None = None
        problems: list[dict[str, Any]] = []
        try:
            kind = classify(path)
            if kind == "unsupported":
                suffixes = ", ".join(sorted(INPUT_SUFFIXES))
                problems.append(_reason(ref, f"unsupported file type (expected {suffixes})"))
            elif kind == "goals":
                report = api.push_goals([path])
            else:
                report = api.push_assessments([path], fingerprints=False)  # taken once
        except (FhirError, StateError):
            log.warning("daemon.inbox_deferred", file=ref, kind=kind)
            raise
        except InvalidInputError as exc:
            problems.extend(_problem_json(p, path) for p in exc.problems)
        except Exception as exc:  # one file's surprise must not stop the inbox
            # not a server problem: this input trips a check we did not foresee. Move it
            # aside rather than retrying it forever; the log has the type.
            log.error("daemon.inbox_unexpected", file=ref, error=type(exc).__name__)
            problems.append(_reason(ref, f"could not be processed ({type(exc).__name__})"))
        return self._finish(path, kind, started, report, problems, taken, api)

    def _finish(
        self,
        path: Path,
        kind: Kind,
        started: float,
        report: Report | None,
        problems: list[dict[str, Any]],
        taken: _Taken | None = None,
        api: AllianceFhir | None = None,
    ) -> FileResult:
        ref = file_ref(path.name)
        counts: dict[str, int] = {}
        run_id: str | None = None
        skipped: list[str] = []
        failures: list[str] = []
        if report is not None:
            problems.extend(_problem_json(p, path) for p in report.problems)
            skipped = [_short(s) for s in report.skipped]
            if report.result is not None:
                counts.update(report.result.summary())
                run_id = report.result.run_id
                failures = [_short(f) for f in _safe_failures(api, run_id, report)]
        change = taken.differs(path) if taken is not None else None
        if change is not None:
            # what we pushed may not be all the file holds now: keep it, say so, never archive
            # it as done. Writes are conditional, so resubmitting the whole file is safe.
            log.warning("daemon.inbox_changed_during_push", file=ref, change=change)
            problems.append(
                _reason(
                    ref,
                    f"the file changed while it was being processed ({change}); "
                    "resubmit the complete file",
                )
            )
        bad = bool(problems) or counts.get("rejected", 0) > 0
        counts["problems"] = len(problems)
        counts["skipped"] = len(skipped)
        outcome: Outcome = "failed" if bad else "processed"
        try:
            target = self._move(path, self.failed_dir if bad else self.processed_dir)
        except OSError as exc:
            if bad:
                log.error("daemon.inbox_move_failed", file=ref, error=exc.strerror)
                return FileResult(path.name, kind, None, counts)
            problems.append(_reason(ref, f"could not be archived: {exc.strerror}"))
            counts["problems"] = len(problems)
            outcome = "failed"
            try:
                target = self._move(path, self.failed_dir)
            except OSError as again:
                log.error("daemon.inbox_move_failed", file=ref, error=again.strerror)
                return FileResult(path.name, kind, None, counts)
        if taken is not None and outcome == "processed" and taken.differs(target):
            # the writer still held it open and appended after the move: quarantine the copy.
            log.warning("daemon.inbox_changed_during_push", file=ref, change="after the move")
            problems.append(
                _reason(
                    ref, "the file changed while it was being archived; resubmit the complete file"
                )
            )
            counts["problems"] = len(problems)
            outcome = "failed"
            target = self._move(target, self.failed_dir, original=path.name)
        body = {
            "file": ref,
            "kind": kind,
            "outcome": outcome,
            "sha256": taken.sha256 if taken is not None else None,
            "started": _now_iso(started),
            "finished": _now_iso(self.wall()),
            "run_id": run_id,
            "counts": counts,
            "problems": problems,
            "skipped": skipped,
            "failures": failures,
        }
        report_path = target.with_name(target.name + REPORT_SUFFIX)
        write_private(report_path, json.dumps(body, indent=2, sort_keys=True) + "\n")
        log.info(
            "daemon.inbox_file",
            file=ref,
            kind=kind,
            outcome=outcome,
            **{k: v for k, v in counts.items() if v},
        )
        return FileResult(path.name, kind, outcome, counts, target, report_path)

    def _move(self, path: Path, folder: Path, *, original: str | None = None) -> Path:
        """Move ``path`` into ``folder`` under a free name of at most NAME_MAX bytes
        (report name included); the archived copy is made 0600 unless it shares its inode."""
        private_dir(folder)
        name = original or path.name
        stamp = datetime.fromtimestamp(self.wall(), tz=UTC).strftime("%Y%m%dT%H%M%SZ")
        target = folder / archive_name(name)
        n = 1
        while _taken(target):
            target = folder / archive_name(name, stamp if n == 1 else f"{stamp}-{n}")
            n += 1
        os.replace(path, target)
        with contextlib.suppress(OSError):
            st = target.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                os.chmod(target, FILE_MODE)
        fsync_dir(folder)
        fsync_dir(path.parent)
        self._seen.pop(name, None)
        return target


def file_ref(name: str) -> str:
    """How logs and reports name an inbox file (names may be people's): a stable short hash
    of the name plus its extension, e.g. ``3f2a9c01d4e5.yaml``."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    suffix = Path(name).suffix.lower()
    if len(suffix) > _MAX_SUFFIX or not suffix[1:].isalnum():
        suffix = ""
    return digest + suffix


def archive_name(name: str, stamp: str | None = None) -> str:
    """``name`` (with ``.stamp`` before its extension when given), cut so that it and its
    ``.report.json`` fit NAME_MAX bytes: a cut name ends in ``~`` + a short hash of the
    original, so two long names never collide."""
    path = Path(name)
    suffix = path.suffix if len(path.suffix.encode("utf-8", "surrogateescape")) <= 16 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    extra = f".{stamp}" if stamp else ""
    candidate = f"{stem}{extra}{suffix}"
    if _bytes(candidate) <= _MAX_ARCHIVE_NAME:
        return candidate
    tag = "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:10]
    budget = _MAX_ARCHIVE_NAME - _bytes(f"{tag}{extra}{suffix}")
    cut = stem
    while _bytes(cut) > budget:
        cut = cut[:-1]
    return f"{cut}{tag}{extra}{suffix}"


def _bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _reason(ref: str, reason: str) -> dict[str, Any]:
    return {"file": ref, "line": None, "path": None, "field": "", "reason": reason}


def _take(path: Path) -> _Taken:
    """Check and fingerprint a file before reading it: symlinks and files with other hard
    links are refused (they point at data outside the inbox), unreadable ones too."""
    try:
        st = path.lstat()
    except OSError as exc:
        raise _Refused(f"cannot read: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise _Refused("symbolic links are refused; copy the file into the inbox instead")
    if not stat.S_ISREG(st.st_mode):
        raise _Refused("not a regular file")
    if st.st_nlink > 1:
        raise _Refused(
            f"the file has {st.st_nlink} hard links and is refused; "
            "copy it into the inbox instead of linking it"
        )
    digest = _sha256(path)
    if digest is None:
        raise _Refused("cannot read the file")
    return _Taken(st.st_size, st.st_mtime_ns, digest)


def _safe_failures(api: AllianceFhir | None, run_id: str, report: Report) -> list[str]:
    """The run's failures with any server-supplied text replaced by the dead letter's
    redacted reason (a rejected record's message may echo the request: PHI)."""
    assert report.result is not None
    failures = list(report.result.failures)
    if api is None or not failures:
        return failures
    letters = {
        f"{d.kind}/{d.key}: ": d.reason for d in api.store.open_dead_letters() if d.run_id == run_id
    }
    out = []
    for failure in failures:
        prefix = next((p for p in letters if failure.startswith(p)), None)
        out.append(failure if prefix is None else prefix + letters[prefix])
    return out


def _taken(target: Path) -> bool:
    return (
        target.exists()
        or target.is_symlink()
        or target.with_name(target.name + REPORT_SUFFIX).exists()
    )


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def summarize(results: Sequence[FileResult]) -> Mapping[str, int]:
    """Step counts for the cycle: the sync counters summed, plus files processed/failed."""
    total: dict[str, int] = {"files_processed": 0, "files_failed": 0}
    for result in results:
        if result.outcome is not None:
            total[f"files_{result.outcome}"] += 1
        for key in ("created", "updated", "unchanged", "conflict", "rejected"):
            if result.counts.get(key):
                total[key] = total.get(key, 0) + result.counts[key]
    return total
