"""What several daemons split between them: work items derived from the sources every cycle.

* ``source``: one per configured assessment or goal file (``settings.assessments``,
  ``settings.goals``, folders expanded as ``sync`` expands them);
* ``inbox``: one per file in this host's inbox (the host is part of the key: each machine
  has its own inbox folder);
* ``publish`` and ``monitor``: one each, so instruments are published and the monitor runs
  by one worker at a time.

A key is ``kind:`` + the sha256 of what identifies the item (a file's absolute path), never
the path itself: a file name may be a person's name. The fingerprint says when an item is
due again: a file's stat tuple plus the reading context (``app.fingerprints.context_hash``:
tool version, instruments, settings that change the mapping); the publish item's context;
the monitor's interval bucket. Two workers on the same files and settings derive the same
keys and fingerprints, which is what lets one skip what the other did.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from alliance_fhir.app.records import expand_inputs

__all__ = [
    "INBOX",
    "MONITOR",
    "PUBLISH",
    "SOURCE",
    "WorkItem",
    "inbox_items",
    "monitor_item",
    "publish_item",
    "source_items",
]

SOURCE = "source"
INBOX = "inbox"
PUBLISH = "publish"
MONITOR = "monitor"


@dataclass(frozen=True)
class WorkItem:
    """One unit of work: its queue key and fingerprint, and (this worker's) what to do:
    the file, and whether it holds assessments or goal plans."""

    key: str
    fingerprint: str
    path: Path | None = None
    goals: bool = False


def _sha(*parts: object) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def _file_items(
    paths: Iterable[Path], kind: str, context: str, *, goals: bool, salt: str = ""
) -> list[WorkItem]:
    found = []
    for path in paths:
        stat = _stat(path)
        if stat is None:  # gone since the folder was listed
            continue
        absolute = os.path.abspath(path)
        found.append(
            WorkItem(
                f"{kind}:{_sha(salt, absolute)}",
                _sha(context, *stat),
                path,
                goals,
            )
        )
    return found


def source_items(
    assessments: Sequence[Path], goals: Sequence[Path], context: str
) -> list[WorkItem]:
    """One item per configured assessment file, then per goal file."""
    return _file_items(expand_inputs(assessments), SOURCE, context, goals=False) + _file_items(
        expand_inputs(goals), SOURCE, context, goals=True
    )


def inbox_items(paths: Iterable[Path], context: str) -> list[WorkItem]:
    """One item per inbox file of this host."""
    return _file_items(paths, INBOX, context, goals=False, salt=socket.gethostname())


def publish_item(context: str) -> WorkItem:
    return WorkItem(f"{PUBLISH}:instruments", _sha(context))


def monitor_item(now: float, interval: float) -> WorkItem:
    """Due once per ``interval`` across all workers (the bucket of ``now``)."""
    return WorkItem(f"{MONITOR}:pull", f"{int(now // max(interval, 1.0)):012d}")
