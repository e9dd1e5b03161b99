"""From domain objects to the records a sync run wants on the server (``Desired``).

This is the last pure step before the server: adapters have produced valid FHIR JSON; here
each resource gets its record key, its conditional search and its bundle group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alliance_fhir.adapters.assessment import questionnaire_response, score_observation
from alliance_fhir.adapters.assessment_files import read_assessments
from alliance_fhir.adapters.codesystem import codesystem_for_instruments
from alliance_fhir.adapters.fhirjson import content_hash
from alliance_fhir.adapters.goals import GoalOptions, plan_to_fhir
from alliance_fhir.adapters.questionnaire import (
    questionnaire_from_instrument,
    rival_questionnaire,
)
from alliance_fhir.adapters.record import Desired, record_uuid
from alliance_fhir.adapters.response_files import ReferenceResolver
from alliance_fhir.app.fingerprints import FileDecision, SourceIndex
from alliance_fhir.app.record_reuse import Reuse, reuse_records
from alliance_fhir.app.seen_keys import SeenKeys
from alliance_fhir.assessments import Assessment, prepare
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import (
    InvalidInputError,
    LicensedWordingRequired,
    Problem,
    ScoringError,
    UnknownInstrumentError,
)
from alliance_fhir.goals import Plan
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.overlay import load_overlay
from alliance_fhir.instruments.schema import Instrument, Overlay
from alliance_fhir.instruments.scoring import score
from alliance_fhir.monitoring.alerts import rule_concepts
from alliance_fhir.monitoring.rules import load_rules


@dataclass
class Records:
    """Desired records plus what could not become one (and why)."""

    desired: list[Desired] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: Records of source files skipped as unchanged (``app.fingerprints``): all synced, not
    #: planned, counted ``unchanged``; and how many files that was.
    unchanged: int = 0
    files_skipped: int = 0
    #: The last window of a run (``sync.LastWindow``): its bundles are cut finer.
    last: bool = False

    def extend(self, other: Records) -> None:
        self.desired.extend(other.desired)
        self.problems.extend(other.problems)
        self.skipped.extend(other.skipped)
        self.unchanged += other.unchanged
        self.files_skipped += other.files_skipped


def canonical_search(resource_url: str, version: str) -> str:
    return f"url={resource_url}&version={version}"


def find_overlay(settings: Settings, instrument: Instrument) -> Overlay | None:
    """The licensee overlay for ``instrument`` in ``overlay_dir`` (``<id>.yaml``), if any."""
    if settings.overlay_dir is None:
        return None
    for suffix in (".yaml", ".yml", ".json"):
        path = Path(settings.overlay_dir) / f"{instrument.id}{suffix}"
        if path.is_file():
            return load_overlay(path, instrument)
    return None


#: The content hash we last wrote under a record's (kind, key), if any (the state store's).
PublishedHash = Callable[[str, str], str | None]


def instrument_records(
    library: InstrumentLibrary,
    settings: Settings,
    *,
    labels_only: bool = False,
    only: Iterable[str] | None = None,
    published: PublishedHash | None = None,
) -> Records:
    """Our CodeSystem and one Questionnaire per instrument.

    A licensed instrument with neither an overlay nor ``labels_only`` is skipped with the
    reason, not published with our labels by surprise. With ``published`` (what the state
    store says we wrote), a Questionnaire whose (url, version) already holds the *other*
    wording choice's content is refused as a problem (:func:`_wording_flip`).
    """
    wanted = set(only) if only is not None else None
    out = Records()
    base = settings.canonical_base
    rules = load_rules(library.all(), [settings.mappings_dir] if settings.mappings_dir else [])
    codesystem = codesystem_for_instruments(
        library.all(), base, extra_concepts=rule_concepts(rules)
    )
    out.desired.append(
        Desired(
            kind="codesystem",
            key=f"{codesystem['url']}|{codesystem['version']}",
            resource=codesystem,
            search=canonical_search(codesystem["url"], codesystem["version"]),
            group="codesystem",
        )
    )
    for instrument in library.all():
        if wanted is not None and instrument.id not in wanted:
            continue
        try:
            overlay = find_overlay(settings, instrument)
            q = questionnaire_from_instrument(
                instrument, overlay=overlay, labels_only=labels_only, canonical_base=base
            )
        except LicensedWordingRequired as exc:
            out.skipped.append(f"{instrument.id}: {exc}")
            continue
        except InvalidInputError as exc:
            out.problems.extend(exc.problems)
            continue
        record = Desired(
            kind="questionnaire",
            key=f"{q['url']}|{q['version']}",
            resource=q,
            search=canonical_search(q["url"], q["version"]),
            group=f"questionnaire:{instrument.id}",
        )
        flip = None
        if published is not None:
            stored = published(record.kind, record.key)
            if stored is not None and stored != record.hash:
                flip = _wording_flip(instrument, record, stored, overlay, labels_only, base)
        if flip is not None:
            out.problems.append(flip)
        else:
            out.desired.append(record)
    return out


def _wording_flip(
    instrument: Instrument,
    record: Desired,
    stored: str,
    overlay: Overlay | None,
    labels_only: bool,
    base: str,
) -> Problem | None:
    """The refusal when this run would swap one wording choice for the other under the same
    (url, version), or None.

    One canonical content per (url, version): a licensed instrument published with the
    licensee's wording by one run and with our neutral labels by another (``--labels-only``)
    would be rewritten on every switch. We compare the state store's hash with the hash of the
    other choice's rendering; any other difference (a new release of this tool changing the
    Questionnaire on purpose, a corrected overlay) stays an ordinary update.
    """
    rival = rival_questionnaire(
        instrument, overlay=overlay, labels_only=labels_only, canonical_base=base
    )
    if rival is None:
        return None
    published_as, resource = rival
    if content_hash(resource) != stored:
        return None
    now = "neutral labels (--labels-only)" if labels_only else "the licensee's wording"
    return Problem(
        f"Questionnaire {record.key}",
        "wording",
        f"published with {published_as}; this run would replace it with {now} under the "
        "same version. One content per version: publish the way it was published, or give "
        "the instrument a new version",
    )


def _person_refs(assessment: Assessment) -> dict[tuple[str, str], dict[str, Any]]:
    refs: dict[tuple[str, str], dict[str, Any]] = {}
    for rtype, who in (("Patient", assessment.patient), ("Practitioner", assessment.practitioner)):
        if who is not None:
            ident = {"system": who.system, "value": who.value}
            refs[(who.system, who.value)] = {"type": rtype, "identifier": ident}
    return refs


def assessment_records(
    assessments: Iterable[Assessment], library: InstrumentLibrary, settings: Settings
) -> Records:
    """QuestionnaireResponse + score Observation per assessment, in one bundle group.

    A record that fails its instrument's checks becomes a problem (file, line, field,
    reason). One whose answers are valid but cannot be scored still sends its answers, and
    the reason it has no score is reported as skipped. An ``in-progress`` response (a form
    saved half-filled) is kept the same way but never scored: a score Observation is what
    the monitor's rules and alerts read, and an unfinished form says nothing yet.
    """
    out = Records()
    ns, base = settings.identifier_namespace, settings.canonical_base
    for assessment in assessments:
        try:
            instrument = library.get(assessment.instrument)
        except UnknownInstrumentError as exc:
            out.problems.append(assessment.problem("instrument", str(exc)))
            continue
        try:
            prepared = prepare(instrument, assessment)
            scores = score(instrument, prepared.answers)
            refs = _person_refs(prepared)
            qr = questionnaire_response(
                prepared,
                instrument,
                refs=refs,
                canonical_base=base,
                namespace=ns,
                prepared=True,
                validation=settings.validation,
            )
        except InvalidInputError as exc:
            out.problems.extend(exc.problems)
            continue
        group = f"assessment:{assessment.key}"
        out.desired.append(
            Desired.identified("assessment", assessment.key, qr, namespace=ns, group=group)
        )
        if prepared.status == "in-progress":
            out.skipped.append(
                f"not scored: {assessment.problem('status', 'in-progress: kept, not scored')}"
            )
            continue
        try:
            obs = score_observation(
                prepared,
                instrument,
                scores,
                refs=refs,
                qr_ref=record_uuid("assessment", assessment.key),
                canonical_base=base,
                namespace=ns,
                validation=settings.validation,
            )
        except ScoringError as exc:
            out.skipped.extend(f"not scored: {p}" for p in exc.problems)
            continue
        out.desired.append(
            Desired.identified("score", assessment.key, obs, namespace=ns, group=group)
        )
    return out


def read_assessment_files(
    paths: Iterable[Path],
    library: InstrumentLibrary,
    settings: Settings,
    notes: list[str] | None = None,
    *,
    resolve_reference: ReferenceResolver | None = None,
) -> tuple[list[Assessment], list[Problem]]:
    """Every assessment in the files (directories walked for .yaml/.yml/.json/.csv).

    Bad records become problems; a key seen twice across files is a problem for the second.
    What a file left out (answers to items an instrument does not have) is added to ``notes``.
    """
    assessments: list[Assessment] = []
    problems: list[Problem] = []
    for read in _assessments_by_file(paths, library, settings, resolve_reference):
        assessments.extend(read.found)
        problems.extend(read.problems)
        if notes is not None:
            notes.extend(read.notes)
    return assessments, problems


@dataclass
class _FileRead:
    """One source file's assessments, problems and notes (or its skip decision)."""

    found: list[Assessment]
    problems: list[Problem]
    notes: list[str]
    decision: FileDecision | None = None

    @property
    def skipped(self) -> bool:
        return self.decision is not None and self.decision.skip is not None


def _assessments_by_file(
    paths: Iterable[Path],
    library: InstrumentLibrary,
    settings: Settings,
    resolve_reference: ReferenceResolver | None = None,
    sources: SourceIndex | None = None,
) -> Iterator[_FileRead]:
    """Each file's assessments; with ``sources``, a file unchanged since it was last read
    and synced is not read (``app.fingerprints``), yet its keys still count as seen."""
    seen = SeenKeys()
    paths = list(paths)
    files = _expand(paths)
    decisions = sources.decide(files, paths) if sources is not None else {}
    # Keys of files to be skipped: a file read earlier holding one makes that later file's
    # copy a duplicate, which only reading it reports; it is read after all. Worked out when
    # the first file is read: a run that reads none never decodes the skipped files' records.
    # (The last file holding a key is the one named, as a dict of key -> file would; compact
    # for the same reason as ``seen``.)
    skipped_keys: SeenKeys | None = None
    skipped_files = {str(path): path for path in decisions}
    pending: list[tuple[Path, FileDecision]] = []  # skipped, their keys not yet in ``seen``
    for path in files:
        decision = decisions.get(path)
        if decision is not None and decision.skip is not None:
            pending.append((path, decision))
            yield _FileRead([], [], list(decision.notes[0]), decision)
            continue
        if skipped_keys is None:
            skipped_keys = SeenKeys()
            for skipped_path, d in decisions.items():
                for key, _ in d.assessment_lines():
                    skipped_keys.add(key, str(skipped_path), None)
        for skipped, held in pending:
            for key, line in held.assessment_lines():
                seen.add(key, str(skipped), line)
        pending = []
        resolver = sources.watch(resolve_reference, decision) if sources else resolve_reference
        found, problems, notes = read_assessments(
            path,
            instruments=library.all(),
            canonical_base=settings.canonical_base,
            namespace=settings.identifier_namespace,
            resolve_reference=resolver,
        )
        kept = []
        for assessment in found:
            first = seen.check_in(assessment.key, assessment.source, assessment.line)
            if first is not None:
                problems.append(assessment.problem("key", f"duplicate of the record in {first}"))
                continue
            # (no skipped files, nothing to look up: the usual run without a state)
            later = _last_source(skipped_keys, assessment.key) if skipped_keys else None
            if later is not None and later != str(path):
                decisions[skipped_files[later]].skip = None
            kept.append(assessment)
        yield _FileRead(kept, problems, notes, decision)


def _last_source(table: SeenKeys, key: str) -> str | None:
    """The source ``key`` was last added with, or None."""
    found = [source for source, _ in table.locations(key)]
    return found[-1] if found else None


def _mapped(
    read: _FileRead, library: InstrumentLibrary, settings: Settings, sources: SourceIndex | None
) -> Records:
    """One file's records (none for a file skipped as unchanged: counted ``unchanged``, nor
    for its records reused unmapped: ``app.record_reuse``); the fingerprint of a file read
    is handed to ``sources``."""
    out = Records()
    for part in _mapped_parts(read, library, settings, sources, max(1, len(read.found))):
        out.extend(part)
    return out


def _skipped(read: _FileRead, sources: SourceIndex | None) -> Records:
    """A file skipped as unchanged: its records counted, its notes said again."""
    assert read.decision is not None
    assert read.decision.skip is not None
    if sources is not None:
        sources.skipped_file(read.decision)
    skipped = list(read.decision.notes[1])
    return Records(skipped=skipped, unchanged=len(read.decision.skip), files_skipped=1)


def _remember(read: _FileRead, mapped: Records, sources: SourceIndex | None, reuse: Reuse) -> None:
    """Hand the fingerprint of a file read and mapped (all its records, those reused too)
    to ``sources``."""
    if sources is not None and read.decision is not None:
        clean = not (read.problems or mapped.problems)
        lines = {a.key: a.line for a in read.found}
        notes = (read.notes, mapped.skipped)
        sources.read_file(
            read.decision,
            mapped.desired,
            lines,
            notes,
            clean=clean,
            reused=reuse.records,
            record_sources=reuse.digests,
        )


def _mapped_parts(
    read: _FileRead,
    library: InstrumentLibrary,
    settings: Settings,
    sources: SourceIndex | None,
    part: int,
) -> Iterator[Records]:
    """One file's records, ``part`` assessments at a time, so a large file's first records
    can be sent while the rest are mapped; its unchanged records reused, not mapped
    (counted ``unchanged`` with the first part). The fingerprint is handed over (with every
    record) before the last part."""
    if read.skipped:
        yield _skipped(read, sources)
        return
    reuse = reuse_records(read.found, read.decision, sources)
    todo = reuse.to_map
    whole = Records()
    starts = range(0, len(todo), part) if todo else range(1)
    for start in starts:
        mapped = assessment_records(todo[start : start + part], library, settings)
        whole.extend(mapped)
        if start == 0:
            mapped.unchanged += len(reuse.records)
        if start + part >= len(todo):
            _remember(read, whole, sources, reuse)
        yield mapped


def assessment_files_records(
    paths: Iterable[Path],
    library: InstrumentLibrary,
    settings: Settings,
    *,
    resolve_reference: ReferenceResolver | None = None,
    sources: SourceIndex | None = None,
) -> Records:
    """All files' records at once: every reading problem before the mapping problems, every
    reading note before the mapping notes (the order the CLI prints them in)."""
    read_problems: list[Problem] = []
    read_notes: list[str] = []
    out = Records()
    for read in _assessments_by_file(paths, library, settings, resolve_reference, sources):
        read_problems.extend(read.problems)
        read_notes.extend(read.notes)
        out.extend(_mapped(read, library, settings, sources))
    out.problems[:0] = read_problems
    out.skipped[:0] = read_notes
    if sources is not None:
        sources.finish()
    return out


#: Records per window of a streamed sync: two bundles of 100 (an assessment is two records),
#: one per connection at the default concurrency, so sending starts after ~100 assessments.
WINDOW_RECORDS = 200


def assessment_windows(
    paths: Iterable[Path],
    library: InstrumentLibrary,
    settings: Settings,
    *,
    size: int = WINDOW_RECORDS,
    resolve_reference: ReferenceResolver | None = None,
    sources: SourceIndex | None = None,
    last: bool = False,
) -> Iterator[Records]:
    """Assessment records a few files at a time (at least ``size`` records a window; a large
    file is mapped and cut ``size // 2`` assessments at a time), so memory stays flat however
    large the import and the sync sends one window while the next is mapped. The first
    window is one bundle's worth (``settings.bundle_size``): until it is mapped, a first
    sync has nothing to send but the instruments and half its connections stay idle.
    ``last``: nothing follows in the run, and the window after the last file is marked so."""
    window = Records()
    wanted = min(size, settings.bundle_size)  # the first window's, then ``size``
    for read in _assessments_by_file(paths, library, settings, resolve_reference, sources):
        window.problems.extend(read.problems)
        window.skipped.extend(read.notes)
        for mapped in _mapped_parts(read, library, settings, sources, max(1, wanted // 2)):
            window.extend(mapped)
            if len(window.desired) >= wanted:
                yield window
                window = Records()
                wanted = size
    if sources is not None:
        sources.finish()
    if window.desired or window.problems or window.skipped or window.unchanged:
        window.last = last
        yield window


INPUT_SUFFIXES = (".yaml", ".yml", ".json", ".csv")


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in INPUT_SUFFIXES)
            )
        else:
            out.append(path)
    return out


def goal_options(settings: Settings) -> GoalOptions:
    return GoalOptions(
        namespace=settings.identifier_namespace, canonical_base=settings.canonical_base
    )


def goal_records(plans: Iterable[Plan], settings: Settings) -> Records:
    """Every plan's records (``plan_to_fhir``: Goals, GAS Observations, CarePlan in one bundle
    group per plan); a plan that is not valid FHIR becomes problems."""
    out = Records()
    options = goal_options(settings)
    for plan in plans:
        try:
            out.desired.extend(plan_to_fhir(plan, None, options, validation=settings.validation))
        except InvalidInputError as exc:
            out.problems.extend(exc.problems)
    return out


def expand_inputs(paths: Iterable[Path]) -> list[Path]:
    """The input files ``paths`` name, folders expanded as every read expands them (the work
    queue's items must be the files a run would read)."""
    return _expand(paths)
