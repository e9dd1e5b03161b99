"""Source fingerprints: an unchanged source file whose records are all synced is not parsed.

Re-reading, checking, scoring, mapping and validating every record of every source file to
find that nothing changed is minutes of CPU per run at 100,000 assessments. A file is
skipped when all of these hold:

* its content's sha256 equals the one stored when it was last read;
* the *context hash* equals the stored one: everything besides the file's bytes that changes
  what it maps to (instrument definitions in use, overlays, the CSV column map, namespace,
  canonical base, patient map and identifier system, ``labels_only``, the versions of this
  tool, fhir.resources and pydantic);
* every record it mapped to is ``synced`` in the state store with that very content hash, a
  server id and no open dead letter (nothing pending, in conflict or refused).

A file that had input problems is always read again (they make the run fail until fixed,
and a duplicate key depends on the other files); the notes a file gave (records left out on
purpose, responses not scored) are kept with its fingerprint and said again when it is
skipped, so the output stays the same. A file is also read again when its references were
resolved by reading the server (an EHR can re-identify a patient), and a file that changed
while it was read. ``--full`` reads and plans everything.

**Why the sha256 always decides.** The stat tuple (size, mtime_ns, inode) is stored, but an
unchanged tuple does not prove unchanged content: a file replaced by another of the same size
with its mtime restored (``cp -p``, ``touch -r``, an unpacked archive) can keep all three (an
inode is reused as soon as it is freed), timestamps are as coarse as 1-2 s on FAT, SMB and
some NFS mounts, and a write in the same clock tick as our read leaves mtime unchanged (git's
"racy" case). ctime would catch most of these, but not on every filesystem we may be given.
Hashing costs a read of bytes already in the page cache at several hundred MB/s, two orders
of magnitude below parsing them, so we always hash; the stat tuple is used to notice a file
that changed while we read it (its fingerprint is then not kept).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import alliance_fhir
from alliance_fhir.adapters.record import Desired
from alliance_fhir.adapters.response_files import ReferenceResolver
from alliance_fhir.assessments import load_csv_map
from alliance_fhir.assessments.model import Identifier
from alliance_fhir.config import Settings
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.state.sources import SourceFingerprint, SourceRecord

__all__ = ["FileDecision", "SourceIndex", "context_hash", "file_sha256"]

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def context_hash(
    library: InstrumentLibrary, settings: Settings, *, labels_only: bool = False
) -> str:
    """The hash of everything besides a file's bytes that changes what it maps to."""
    digest = hashlib.sha256()

    def part(name: str, value: object) -> None:
        digest.update(json.dumps([name, value], sort_keys=True, default=str).encode())

    part("tool", alliance_fhir.__version__)
    part("fhir.resources", _version("fhir.resources"))
    part("pydantic", _version("pydantic"))
    part("namespace", settings.identifier_namespace)
    part("canonical_base", settings.canonical_base)
    part("labels_only", labels_only)
    part("patient_map", sorted(settings.patient_map.items()))
    part("patient_identifier_system", settings.patient_identifier_system)
    for instrument in library.all():
        part("instrument", instrument.model_dump(mode="json"))
    part("csv_map", load_csv_map().model_dump(mode="json"))
    if settings.overlay_dir is not None and Path(settings.overlay_dir).is_dir():
        for path in sorted(Path(settings.overlay_dir).rglob("*")):
            if path.is_file():
                part("overlay", [path.name, hashlib.sha256(path.read_bytes()).hexdigest()])
    return digest.hexdigest()


def _path_key(path: Path) -> str:
    """A file's key in the store: the sha256 of its absolute path (a file name may be a
    person's name; the store needs only to recognise the path)."""
    absolute = os.path.abspath(path)  # not resolve(): a symlink walk per file costs seconds
    return hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()


def _stat_tuple(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


@dataclass
class FileDecision:
    """One source file in one run: its key and hash, and its records when it is skipped."""

    path: Path
    key: str
    stat: tuple[int, int, int, int] | None
    sha256: str | None
    #: The stored records of a file skipped as unchanged; None when it is read.
    skip: tuple[SourceRecord, ...] | None = None
    #: A skipped file's notes: from reading it, from mapping its records.
    notes: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    #: A reference in the file was resolved by reading the server.
    used_server: bool = False

    def assessment_lines(self) -> Iterable[tuple[str, int | None]]:
        """(assessment key, line) of a skipped file's assessments."""
        for kind, key, _, line in self.skip or ():
            if kind == "assessment":
                yield key, line


@dataclass
class SourceIndex:
    """The fingerprints of one run: which files to skip, and what to remember after."""

    store: StateStore
    context: str
    settings: Settings
    #: Read and plan everything (``--full``); fingerprints are still remembered.
    full: bool = False
    #: Keep the fingerprints of files read (False for dry runs: they write nothing).
    remember: bool = True
    files: int = 0
    skipped: int = 0
    records_skipped: int = 0
    _new: list[SourceFingerprint] = field(default_factory=list)
    _stale: list[str] = field(default_factory=list)

    def decide(self, paths: Sequence[Path]) -> dict[Path, FileDecision]:
        """Hash every file and decide which are unchanged (see the module docstring)."""
        stored = self.store.source_fingerprints() if not self.full else {}
        synced: dict[tuple[str, str], str] | None = None
        out: dict[Path, FileDecision] = {}
        for path in paths:
            stat = _stat_tuple(path)
            try:
                sha = file_sha256(path)
            except OSError:
                sha = None  # the reader reports it
            decision = FileDecision(path, _path_key(path), stat, sha)
            out[path] = decision
            known = stored.get(decision.key)
            if known is None or sha is None or known.sha256 != sha or known.context != self.context:
                continue
            if synced is None:
                synced = self.store.synced_hashes()
            if all(synced.get((kind, key)) == h for kind, key, h, _ in known.records):
                decision.skip = known.records
                decision.notes = known.notes
        return out

    def watch(
        self, resolve: ReferenceResolver | None, decision: FileDecision | None
    ) -> ReferenceResolver | None:
        """``resolve``, noting on ``decision`` a reference the patient map does not hold
        (it was resolved by reading the server)."""
        if resolve is None or decision is None:
            return resolve
        mapped = self.settings.patient_map
        inner = resolve

        def watched(reference: str) -> Identifier | None:
            if reference not in mapped:
                decision.used_server = True
            return inner(reference)

        return watched

    def skipped_file(self, decision: FileDecision) -> None:
        self.files += 1
        self.skipped += 1
        self.records_skipped += len(decision.skip or ())

    def read_file(
        self,
        decision: FileDecision,
        desired: Sequence[Desired],
        lines: dict[str, int | None],
        notes: tuple[Sequence[str], Sequence[str]],
        *,
        clean: bool,
    ) -> None:
        """A file was read and mapped to ``desired`` (``lines``: each assessment's line;
        ``notes``: what reading it and mapping it noted); a file that is not ``clean`` (it
        had problems) is read again next time."""
        self.files += 1
        if not self.remember:
            return
        if (
            not clean
            or decision.used_server
            or decision.sha256 is None
            or decision.stat is None
            or _stat_tuple(decision.path) != decision.stat
        ):
            self._stale.append(decision.key)
            return
        size, mtime_ns, inode, _ = decision.stat
        records = tuple(
            (d.kind, d.key, d.hash, lines.get(d.key) if d.kind == "assessment" else None)
            for d in desired
        )
        self._new.append(
            SourceFingerprint(
                decision.key,
                size,
                mtime_ns,
                inode,
                decision.sha256,
                self.context,
                records,
                (tuple(notes[0]), tuple(notes[1])),
            )
        )

    def finish(self) -> None:
        """Store what this run learnt, and its figures for ``status`` and ``doctor``."""
        if not self.remember:
            return
        if self._new:
            self.store.save_source_fingerprints(self._new)
        if self._stale:
            self.store.forget_source_fingerprints(self._stale)
        self._new, self._stale = [], []
        self.store.set_source_figures(
            {
                "files": self.files,
                "skipped": self.skipped,
                "records_skipped": self.records_skipped,
                "full": int(self.full),
                "at": time.time(),
            }
        )
