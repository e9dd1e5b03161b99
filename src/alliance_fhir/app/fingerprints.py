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

**A changed file's unchanged records** (``app.record_reuse``): a file read under the context
it was last read under keeps, per assessment, a digest of the record's own content. A record
whose digest is unchanged and whose records are all synced with their stored hashes is not
checked, scored, mapped or planned again: it counts ``unchanged``. A file with input problems
keeps its row with an empty sha256, so it is always read again (its problems are said again)
while its good records are reused.

**Why the sha256 always decides.** The stat tuple (size, mtime_ns, inode) is stored, but an
unchanged tuple does not prove unchanged content: a file replaced by another of the same size
with its mtime restored (``cp -p``, ``touch -r``, an unpacked archive) can keep all three (an
inode is reused as soon as it is freed), timestamps are as coarse as 1-2 s on FAT, SMB and
some NFS mounts, and a write in the same clock tick as our read leaves mtime unchanged (git's
"racy" case). ctime would catch most of these, but not on every filesystem we may be given.
Hashing costs a read of bytes already in the page cache at several hundred MB/s, two orders
of magnitude below parsing them, so we always hash; the stat tuple is used to notice a file
that changed while we read it (its fingerprint is then not kept). Measured again for #15
item 5 (5,020 files, 45 MB, 100,000 assessments, load ~3): hashing is 0.27 s of a 7-8 s
unchanged re-sync, under 4% of it, so a stat hint would save little and trade away the
cases above: every file is still hashed.

**Pruning.** Each fingerprint keeps the key of the folder it was listed under (its *root*).
At the end of a run that listed a folder, the rows of that root whose file this run did not
see (deleted, renamed) are dropped. Only roots this run listed are pruned: a run of other
sources, or one that stopped before its end (a folder that could not be listed stops it),
prunes nothing; a row pruned by mistake costs only one more read of its file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import alliance_fhir
from alliance_fhir.adapters.goals import KIND_PLAN, GoalOptions
from alliance_fhir.adapters.record import Desired
from alliance_fhir.adapters.response_files import ReferenceResolver
from alliance_fhir.assessments import load_csv_map
from alliance_fhir.assessments.model import Identifier
from alliance_fhir.config import Settings
from alliance_fhir.goals._csv import default_field_map  # the CSV reader's own default
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.state.lookups import SyncedHashes
from alliance_fhir.sync.state.sources import SourceFingerprint, SourceRecord, StoredRecords
from alliance_fhir.versions import installed

__all__ = [
    "FileDecision",
    "SourceIndex",
    "context_hash",
    "file_sha256",
    "goal_context_hash",
    "plain_records",
]

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    return _stat_sha256(path)[1]


def _stat_sha256(path: Path) -> tuple[tuple[int, int, int, int], str]:
    """A file's stat tuple (as ``_stat_tuple``) and the sha256 of its bytes, from one open
    (a path lookup less per file: 5,020 of them at 100,000 assessments)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns), digest.hexdigest()


def _version(package: str) -> str:
    return installed(package) or "-"


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


def goal_context_hash(settings: Settings) -> str:
    """The hash of everything besides a goal file's bytes that changes what it maps to:
    this tool's and its FHIR libraries' versions, namespace, canonical base, the goal
    options and the shipped CSV field map (plans do not use instruments or the patient map)."""
    digest = hashlib.sha256()

    def part(name: str, value: object) -> None:
        digest.update(json.dumps([name, value], sort_keys=True, default=str).encode())

    part("goals", 1)  # never equal to an assessment file's context
    part("tool", alliance_fhir.__version__)
    part("fhir.resources", _version("fhir.resources"))
    part("pydantic", _version("pydantic"))
    # As ``app.records.goal_options`` builds them (that module imports this one).
    options = GoalOptions(
        namespace=settings.identifier_namespace, canonical_base=settings.canonical_base
    )
    part("options", dataclasses.asdict(options))
    part("field_map", hashlib.sha256(default_field_map().read_bytes()).hexdigest())
    return digest.hexdigest()


def _path_key(path: Path) -> str:
    """A file's key in the store: the sha256 of its absolute path (a file name may be a
    person's name; the store needs only to recognise the path)."""
    return _absolute_key(os.path.abspath(path))  # not resolve(): a symlink walk costs seconds


def _absolute_key(absolute: str) -> str:
    """``_path_key`` of a path made absolute already."""
    return hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()


def plain_records(records: Sequence[SourceRecord]) -> Sequence[Sequence[Any]]:
    """Stored records as they were decoded (JSON lists): nothing made per record."""
    return records.lists() if isinstance(records, StoredRecords) else records


def _stat_tuple(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _folders(roots: Iterable[Path]) -> dict[str, str]:
    """key -> absolute path (with a trailing separator) of each root that is a folder."""
    found: dict[str, str] = {}
    for root in roots:
        if root.is_dir():
            found[_path_key(root)] = os.path.join(os.path.abspath(root), "")
    return found


@dataclass
class FileDecision:
    """One source file in one run: its key and hash, and its records when it is skipped."""

    path: Path
    key: str
    stat: tuple[int, int, int, int] | None
    sha256: str | None
    #: The stored records of a file skipped as unchanged; None when it is read.
    skip: Sequence[SourceRecord] | None = None
    #: A skipped file's notes: from reading it, from mapping its records.
    notes: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    #: A reference in the file was resolved by reading the server.
    used_server: bool = False
    #: The key of the folder this run listed the file under (None: named alone).
    root: str | None = None
    #: The context hash the file is read under (assessment or goal files').
    context: str = ""
    #: The stored fingerprint of a file read under the same context (changed, or not all
    #: synced): its records' digests say which need no mapping again.
    known: SourceFingerprint | None = None

    def assessment_lines(self) -> Iterable[tuple[str, int | None]]:
        """(assessment key, line) of a skipped file's assessments."""
        for kind, key, _, line in plain_records(self.skip or ()):
            if kind == "assessment":
                yield key, line

    def plan_keys(self) -> Iterable[str]:
        """The plan keys of a skipped goal file (its CarePlans' keys)."""
        for kind, key, _, _ in plain_records(self.skip or ()):
            if kind == KIND_PLAN:
                yield key


@dataclass
class SourceIndex:
    """The fingerprints of one run: which files to skip, and what to remember after."""

    store: StateStore
    context: str
    settings: Settings
    #: The context hash of goal files (``goal_context_hash``).
    goal_context: str = ""
    #: Read and plan everything (``--full``); fingerprints are still remembered.
    full: bool = False
    #: Keep the fingerprints of files read (False for dry runs: they write nothing).
    remember: bool = True
    files: int = 0
    skipped: int = 0
    records_skipped: int = 0
    #: Rows dropped at the end of the run: their files are gone from a folder it listed.
    pruned: int = 0
    _new: list[SourceFingerprint] = field(default_factory=list)
    _stale: list[str] = field(default_factory=list)
    _listed: set[str] = field(default_factory=set)
    _seen: set[str] = field(default_factory=set)
    _rooted: list[tuple[str, str]] = field(default_factory=list)
    _synced: SyncedHashes | None = None
    #: The state generation read before the synced hashes, and the files found all synced.
    _generation: int | None = None
    _verified: list[tuple[str, int]] = field(default_factory=list)

    def decide(
        self, paths: Sequence[Path], roots: Iterable[Path] = (), *, goals: bool = False
    ) -> dict[Path, FileDecision]:
        """Hash every file and decide which are unchanged (see the module docstring).
        ``paths`` are the files listed from ``roots`` (the sources as given): those that are
        folders are this run's to prune. ``goals``: they are goal files. A file read under
        the context it was last read under keeps its stored fingerprint (``known``), so its
        unchanged records need not be mapped again (``app.record_reuse``)."""
        context = self.goal_context if goals else self.context
        folders = _folders(roots)
        self._listed.update(folders)
        out: dict[Path, FileDecision] = {}
        for path in paths:
            stat: tuple[int, int, int, int] | None
            sha: str | None
            try:
                stat, sha = _stat_sha256(path)
            except OSError:
                stat, sha = _stat_tuple(path), None  # the reader reports it
            absolute = os.path.abspath(path)
            decision = FileDecision(path, _absolute_key(absolute), stat, sha, context=context)
            decision.root = next((k for k, d in folders.items() if absolute.startswith(d)), None)
            self._seen.add(decision.key)
            out[path] = decision
        stored = (
            self.store.source_fingerprints([d.key for d in out.values()])
            if out and not self.full
            else {}
        )
        if stored and self._generation is None:
            self._generation = self.store.state_generation()  # before the synced hashes
        for decision in out.values():
            known = stored.get(decision.key)
            if known is None:
                continue
            if decision.root is not None and known.root != decision.root:
                self._rooted.append((decision.key, decision.root))
            if decision.sha256 is None or known.context != context:
                continue
            decision.known = known
            if known.sha256 != decision.sha256:
                continue
            if known.verified is not None and known.verified == self._generation:
                unchanged = True  # nothing written since they were all found synced
            else:
                unchanged = self.synced().holds(plain_records(known.records))
                if unchanged:
                    self._verified.append((decision.key, len(known.records)))
            if unchanged:
                decision.skip = known.records
                decision.notes = known.notes
        return out

    def synced(self) -> SyncedHashes:
        """The state store's synced hashes (``StateStore.synced_hashes``), read once a run."""
        if self._synced is None:
            self._synced = self.store.synced_hashes()
        return self._synced

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
        reused: Sequence[SourceRecord] = (),
        record_sources: Mapping[str, str] | None = None,
    ) -> None:
        """A file was read and mapped to ``desired`` (``lines``: each assessment's line;
        ``notes``: what reading it and mapping it noted), plus the stored records of its
        records not mapped again (``reused``); ``record_sources``: each assessment's source
        digest. A file that is not ``clean`` (it had problems) is read again next time: its
        row keeps an empty sha256, only so that its good records can be reused."""
        self.files += 1
        if not self.remember:
            return
        if (
            (not clean and not record_sources)
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
                decision.sha256 if clean else "",
                decision.context,
                records + tuple(reused),
                (tuple(notes[0]), tuple(notes[1])),
                decision.root,
                dict(record_sources or {}),
            )
        )

    def finish(self) -> None:
        """Store what this run learnt, and its figures for ``status`` and ``doctor``."""
        if not self.remember:
            return
        if self._new:
            self.store.save_source_fingerprints(self._new)
        read = {f.path_key for f in self._new} | set(self._stale)  # read after all: not these
        verified = [(k, n) for k, n in self._verified if k not in read]
        if verified and self._generation is not None:
            self.store.mark_sources_verified(verified, self._generation)
        if self._rooted:
            self.store.set_source_roots(self._rooted)
        if self._listed:
            gone = [k for k in self.store.source_root_keys(self._listed) if k not in self._seen]
            self._stale.extend(gone)
            self.pruned += len(gone)
        if self._stale:
            self.store.forget_source_fingerprints(self._stale)
        self._new, self._stale, self._rooted = [], [], []
        self._listed, self._seen = set(), set()
        self._synced, self._generation, self._verified = None, None, []
        self.store.set_source_figures(
            {
                "files": self.files,
                "skipped": self.skipped,
                "records_skipped": self.records_skipped,
                "full": int(self.full),
                "at": time.time(),
            }
        )
