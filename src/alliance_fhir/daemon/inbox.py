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
  renamed). A name already taken gets a UTC timestamp suffix, so nothing is overwritten.
* **``failed/`` is for bad input only** — a parse error, a record that fails its checks, a
  record the server refused as invalid. When the *server* is down, slow or refusing us
  (``FhirError`` other than a rejected record), the file stays in the inbox, the error goes
  up to the cycle (which backs off), and the next cycle tries it again. Writes are
  conditional, so a retried file never duplicates what already landed.
* **PHI-free reports.** Counts, and problems as file / line / path / field / reason, with
  every registered sensitive value masked. Never answer text.

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
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from alliance_fhir.exceptions import FhirError, InvalidInputError, Problem, StateError
from alliance_fhir.log import get_logger, scrub

if TYPE_CHECKING:
    from alliance_fhir.api import AllianceFhir, Report

log = get_logger("alliance_fhir.daemon")

INPUT_SUFFIXES = frozenset({".yaml", ".yml", ".json", ".csv"})
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".swx", "~")
PROCESSED = "processed"
FAILED = "failed"
REPORT_SUFFIX = ".report.json"
MAX_REASON = 300

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
        location = source.name
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
            folder.mkdir(parents=True, exist_ok=True)

    def _candidates(self) -> list[tuple[Path, os.stat_result]]:
        out: list[tuple[Path, os.stat_result]] = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return out
        for entry in entries:
            if is_ignored(entry.name):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
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
            st = path.stat()
        except FileNotFoundError:
            return True
        return previous is None or previous != _Seen(st.st_size, st.st_mtime_ns)

    # Processing

    def process(self, api: AllianceFhir, path: Path) -> FileResult:
        """Push one settled file and move it to processed/ or failed/ with its report.

        Raises ``FhirError``/``StateError`` (server or state trouble) with the file left in
        place: the caller backs off and the next cycle retries it.
        """
        kind = classify(path)
        started = self.wall()
        digest = _sha256(path)
        report: Report | None = None
        problems: list[dict[str, Any]] = []
        failures: list[str] = []
        skipped: list[str] = []
        if kind == "unsupported":
            suffixes = ", ".join(sorted(INPUT_SUFFIXES))
            problems.append(
                {
                    "file": path.name,
                    "line": None,
                    "path": None,
                    "field": "",
                    "reason": f"unsupported file type (expected {suffixes})",
                }
            )
        else:
            try:
                report = api.push_goals([path]) if kind == "goals" else api.push_assessments([path])
            except (FhirError, StateError):
                log.warning("daemon.inbox_deferred", file=path.name, kind=kind)
                raise
            except InvalidInputError as exc:
                problems.extend(_problem_json(p, path) for p in exc.problems)
            except (ValueError, KeyError, TypeError) as exc:
                # not a server problem: this input trips a check we did not foresee. Move it
                # aside rather than retrying it forever; the log has the details.
                log.error("daemon.inbox_unexpected", file=path.name, error=type(exc).__name__)
                problems.append(
                    {
                        "file": path.name,
                        "line": None,
                        "path": None,
                        "field": "",
                        "reason": f"could not be processed ({type(exc).__name__})",
                    }
                )
        counts: dict[str, int] = {}
        run_id: str | None = None
        if report is not None:
            problems.extend(_problem_json(p, path) for p in report.problems)
            skipped = [_short(s) for s in report.skipped]
            if report.result is not None:
                counts.update(report.result.summary())
                failures = [_short(f) for f in report.result.failures]
                run_id = report.result.run_id
        counts["problems"] = len(problems)
        counts["skipped"] = len(skipped)
        bad = bool(problems) or counts.get("rejected", 0) > 0
        outcome: Outcome = "failed" if bad else "processed"
        if self.changed_since_scan(path):
            # rewritten while we read it: what we pushed may not be what is there now.
            log.warning("daemon.inbox_changed_during_push", file=path.name)
            return FileResult(path.name, kind, None, counts)
        target = self._move(path, self.failed_dir if bad else self.processed_dir)
        body = {
            "file": path.name,
            "stored_as": target.name,
            "kind": kind,
            "outcome": outcome,
            "sha256": digest,
            "started": _now_iso(started),
            "finished": _now_iso(self.wall()),
            "run_id": run_id,
            "counts": counts,
            "problems": problems,
            "skipped": skipped,
            "failures": failures,
        }
        report_path = target.with_name(target.name + REPORT_SUFFIX)
        _write_atomic(report_path, json.dumps(body, indent=2, sort_keys=True) + "\n")
        log.info(
            "daemon.inbox_file",
            file=path.name,
            kind=kind,
            outcome=outcome,
            **{k: v for k, v in counts.items() if v},
        )
        return FileResult(path.name, kind, outcome, counts, target, report_path)

    def _move(self, path: Path, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        if _taken(target):
            stamp = datetime.fromtimestamp(self.wall(), tz=UTC).strftime("%Y%m%dT%H%M%SZ")
            stem, suffix = path.stem, path.suffix
            target = folder / f"{stem}.{stamp}{suffix}"
            n = 1
            while _taken(target):
                n += 1
                target = folder / f"{stem}.{stamp}-{n}{suffix}"
        os.replace(path, target)
        _fsync_dir(folder)
        _fsync_dir(path.parent)
        self._seen.pop(path.name, None)
        return target


def _taken(target: Path) -> bool:
    return target.exists() or target.with_name(target.name + REPORT_SUFFIX).exists()


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 16), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
            os.fsync(fd)
    finally:
        os.close(fd)


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
