"""The Python API: what integration jobs import instead of shelling out to the CLI.

>>> from alliance_fhir.api import AllianceFhir
>>> from alliance_fhir.config import load_settings
>>> with AllianceFhir(load_settings(server_url="http://127.0.0.1:8080/fhir")) as af:
...     report = af.push_assessments([Path("export/assessments.csv")])
...     report.ok
True

Every method returns a small report object; nothing prints. Errors are the ones of
``alliance_fhir.exceptions``. One instance holds one client and one state store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from alliance_fhir.adapters.fhirjson import dumps
from alliance_fhir.adapters.questionnaire import questionnaire_from_instrument
from alliance_fhir.adapters.record import Desired
from alliance_fhir.adapters.response_files import ReferenceResolver
from alliance_fhir.api.doctor import Doctor, TypeSupport, describe_server
from alliance_fhir.api.scopes import check_scopes
from alliance_fhir.app.connect import connect
from alliance_fhir.app.engine import sync_engine
from alliance_fhir.app.fingerprints import SourceIndex, context_hash, goal_context_hash
from alliance_fhir.app.goal_files import goal_files_records
from alliance_fhir.app.goal_pull import GoalPull, pull_goal_plans, pull_plans, resolve_patient
from alliance_fhir.app.instrument_fingerprint import instruments_for_sync, instruments_hash
from alliance_fhir.app.monitor import Monitor, MonitorResult, PatientOutcome, configured_rules
from alliance_fhir.app.patients import reference_resolver
from alliance_fhir.app.prefetch import Prefetch
from alliance_fhir.app.records import (
    Records,
    assessment_files_records,
    assessment_windows,
    instrument_records,
    read_assessment_files,
)
from alliance_fhir.app.reports import Reports
from alliance_fhir.app.validation import validate_files
from alliance_fhir.assessments import Assessment, prepare
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import (
    ConfigError,
    FhirError,
    InvalidInputError,
    Problem,
    RetriableError,
)
from alliance_fhir.fhir import Capabilities, FhirClient, probe, statement_to_write
from alliance_fhir.goals import Plan
from alliance_fhir.heap import during_run
from alliance_fhir.instruments.library import (
    InstrumentLibrary,
    UnknownInstrumentError,
    load_library,
)
from alliance_fhir.instruments.overlay import load_overlay
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.instruments.scoring import Scores, score
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.rules import Rule
from alliance_fhir.private_files import wider_than_private
from alliance_fhir.sync.engine import LastWindow, Progress, SyncEngine, SyncResult, Unchanged
from alliance_fhir.sync.export import export_bundles
from alliance_fhir.sync.plan import SyncPlan
from alliance_fhir.sync.references import PERSON_TYPES
from alliance_fhir.sync.state import DeadLetter, RecordState, RunRecord, StateStore, open_store
from alliance_fhir.sync.strategies import WRITTEN_TYPES

__all__ = [
    "AllianceFhir",
    "Doctor",
    "GoalPull",
    "MonitorResult",
    "PatientOutcome",
    "Records",
    "Report",
    "ScoredAssessment",
    "Status",
    "TypeSupport",
    "as_json",
]

log = get_logger("alliance_fhir.api")


@dataclass
class Report:
    """The outcome of a push/publish/sync: input problems, skipped items, and the run."""

    problems: list[Problem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    plan: dict[str, int] = field(default_factory=dict)
    result: SyncResult | None = None
    written: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and (self.result is None or self.result.ok)

    def merge(self, other: Report) -> None:
        self.problems.extend(other.problems)
        self.skipped.extend(other.skipped)
        for key, value in other.plan.items():
            self.plan[key] = self.plan.get(key, 0) + value
        if other.result is not None:
            if self.result is None:
                self.result = other.result
            else:
                self.result.counts.update(other.result.counts)
                self.result.failures.extend(other.result.failures)
                self.result.bundles += other.result.bundles
                self.result.seconds += other.result.seconds
        self.written.extend(other.written)


@dataclass(frozen=True)
class ScoredAssessment:
    assessment: Assessment
    instrument: Instrument
    scores: Scores


@dataclass
class Status:
    runs: list[RunRecord]
    records: dict[str, int]
    conflicts: list[RecordState]
    dead_letters: list[DeadLetter]
    #: The last fingerprinted run's source files: ``files``, ``skipped`` (unchanged, not
    #: read), ``records_skipped``, ``full`` (1 for ``--full``); {} before the first.
    sources: dict[str, int | float] = field(default_factory=dict)


class AllianceFhir:
    """One configured connection: instruments, client, state store, sync engine."""

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._library: InstrumentLibrary | None = None
        self._client: FhirClient | None = None
        self._store: StateStore | None = None
        self._rules: list[Rule] | None = None
        self._capabilities: Capabilities | None = None
        self._early_statement: Prefetch[dict[str, Any]] | None = None
        self.progress: Progress | None = None

    def __enter__(self) -> AllianceFhir:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._store is not None:
            self._store.close()
            self._store = None

    # Lazily built parts

    @property
    def library(self) -> InstrumentLibrary:
        if self._library is None:
            extra = [self.settings.mappings_dir] if self.settings.mappings_dir else []
            self._library = load_library(extra)
        return self._library

    @property
    def client(self) -> FhirClient:
        if self._client is None:
            self._client = connect(self.settings, transport=self._transport)
        return self._client

    @property
    def store(self) -> StateStore:
        if self._store is None:
            url = self.settings.effective_state_url
            postgres = url.startswith(("postgresql://", "postgres://"))
            password = self.settings.secret("state_password") if postgres else None
            self._store = open_store(url, password=password, schema=self.settings.state_schema)
        return self._store

    @property
    def rules(self) -> list[Rule]:
        """The monitoring rules: bundled plus ``settings.mappings_dir``'s (read once)."""
        if self._rules is None:
            self._rules = configured_rules(self.library, self.settings)
        return self._rules

    def probe(self) -> None:
        """Whether the server is there and answering: one small GET /metadata (raises the
        client's errors). What it allows is :meth:`capabilities`."""
        probe(self.client)

    def capabilities(self, *, refresh: bool = False) -> Capabilities:
        """What the server allows, read once per instance (one run) from /metadata. A
        server without a readable statement is treated as today's: transactions."""
        if self._capabilities is None or refresh:
            early, self._early_statement = self._early_statement, None
            try:
                statement = (
                    early.result() if early and not refresh else statement_to_write(self.client)
                )
            except FhirError as exc:
                if isinstance(exc, RetriableError) or exc.status in (401, 403):
                    raise
                log.warning("sync.capabilities_unknown", status=exc.status)
                self._capabilities = Capabilities.unknown()
            else:
                self._capabilities = Capabilities.from_statement(statement)
        return self._capabilities

    def engine(self, *, writing: bool = False) -> SyncEngine:
        """A sync engine on this connection (building it connects the client). For
        ``writing`` the server's capabilities choose the write strategy (read only when the
        run has something to write), and a server that cannot be synced safely is refused
        before any write (ConfigError)."""
        return sync_engine(
            self.settings,
            self.client,
            self.store,
            progress=self.progress,
            capabilities=self._safe_capabilities if writing else None,
        )

    def _safe_capabilities(self) -> Capabilities:
        """The server's capabilities, asked when a run first has something to write; a
        server that cannot be synced safely is refused then, before any write."""
        caps = self.capabilities()
        blockers = caps.blockers(WRITTEN_TYPES, PERSON_TYPES)
        if blockers:
            raise ConfigError(
                "the server cannot be synced safely (see `alliance-fhir doctor`): "
                + "; ".join(blockers)
            )
        return caps

    # Instruments

    def render_questionnaire(
        self, instrument_id: str, *, overlay: Path | None = None, labels_only: bool = False
    ) -> str:
        """The Questionnaire JSON text of one instrument (byte-stable)."""
        instrument = self.library.get(instrument_id)
        loaded = load_overlay(overlay, instrument) if overlay is not None else None
        resource = questionnaire_from_instrument(
            instrument,
            overlay=loaded,
            labels_only=labels_only,
            canonical_base=self.settings.canonical_base,
        )
        return dumps(resource, indent=2)

    def validate(self, paths: Sequence[Path]) -> list[Problem]:
        """Problems in instrument, overlay, rule and goal files (empty when all are valid)."""
        return validate_files(paths, self.library)

    # Writing

    @during_run
    def run(
        self,
        records: Records,
        *,
        command: str,
        dry_run: bool = False,
        out_dir: Path | None = None,
    ) -> Report:
        """Apply prepared records: plan only, export to files, or sync with the server."""
        report = Report(problems=list(records.problems), skipped=list(records.skipped))
        if out_dir is not None:
            report.written = export_bundles(
                records.desired, out_dir, bundle_size=self.settings.bundle_size
            )
            report.plan = {"exported": len(records.desired)}
            return report
        engine = self.engine(writing=not dry_run)
        plan: SyncPlan = engine.plan(records.desired)
        report.plan = plan.counts()
        if records.unchanged:
            report.plan["unchanged"] = report.plan.get("unchanged", 0) + records.unchanged
            report.plan = dict(sorted(report.plan.items()))
        if dry_run:
            return report
        report.result = engine.run_windows(
            [Unchanged(records.unchanged, records.files_skipped), LastWindow(records.desired)],
            command=command,
        )
        self._record_problems(report)
        return report

    def _record_problems(self, report: Report) -> None:
        """Input problems make the run ``failed input`` in ``status`` (with their count)."""
        if report.result is not None and report.problems:
            self.store.mark_failed_input(report.result.run_id, len(report.problems))

    def publish(
        self,
        *,
        labels_only: bool = False,
        instruments: Sequence[str] | None = None,
        dry_run: bool = False,
        out_dir: Path | None = None,
    ) -> Report:
        """Publish our CodeSystem and the instruments' Questionnaires."""
        records = self.instrument_records(
            labels_only=labels_only, instruments=instruments, against_state=out_dir is None
        )
        return self.run(records, command="publish", dry_run=dry_run, out_dir=out_dir)

    def instrument_records(
        self,
        *,
        labels_only: bool = False,
        instruments: Sequence[str] | None = None,
        against_state: bool = True,
    ) -> Records:
        """Our CodeSystem and the Questionnaires as records (a licensed instrument with no
        overlay and no ``labels_only`` is skipped with the reason). ``against_state``: a
        Questionnaire whose version the state store holds with the other wording choice is
        refused as a problem (one content per version); exports to files skip the check."""
        return instrument_records(
            self.library,
            self.settings,
            labels_only=labels_only,
            only=instruments,
            published=self._published_hash if against_state else None,
        )

    def _resolver(self) -> ReferenceResolver:
        """References in form fillers' exports: the patient map, then this server (read
        only when a file needs it)."""
        return reference_resolver(self.settings, lambda: self.client)

    def _published_hash(self, kind: str, key: str) -> str | None:
        state = self.store.get(kind, key)
        return state.content_hash if state is not None else None

    def source_index(
        self, *, full: bool = False, labels_only: bool = False, remember: bool = True
    ) -> SourceIndex:
        """This run's source fingerprints (``app.fingerprints``): which files are unchanged
        and synced, so not read; ``full`` reads every file; ``remember`` keeps what was read."""
        context = context_hash(self.library, self.settings, labels_only=labels_only)
        return SourceIndex(
            self.store,
            context,
            self.settings,
            goal_context=goal_context_hash(self.settings),
            full=full,
            remember=remember,
        )

    def assessment_records(
        self,
        paths: Sequence[Path],
        *,
        fingerprints: bool = False,
        remember: bool = True,
        labels_only: bool = False,
    ) -> Records:
        """Read, check and score assessment files into records (problems kept aside). With
        ``fingerprints``, files unchanged since a run that synced them all are not read:
        their records are only counted (``Records.unchanged``)."""
        return assessment_files_records(
            paths,
            self.library,
            self.settings,
            resolve_reference=self._resolver(),
            sources=(
                self.source_index(remember=remember, labels_only=labels_only)
                if fingerprints
                else None
            ),
        )

    def push_assessments(
        self,
        paths: Sequence[Path],
        *,
        dry_run: bool = False,
        out_dir: Path | None = None,
        full: bool = False,
        fingerprints: bool = True,
    ) -> Report:
        """Send assessments as QuestionnaireResponse + score Observation, streaming: files
        are read, mapped and sent a window at a time. A file unchanged since a run that
        synced all its records is not read (``full``: read and plan every file; without
        ``fingerprints`` none are kept, as for a one-off inbox file)."""
        if out_dir is not None:
            records = self.assessment_records(paths)
            return self.run(records, command="push assessments", out_dir=out_dir)
        if dry_run:
            records = self.assessment_records(paths, fingerprints=not full, remember=False)
            return self.run(records, command="push assessments", dry_run=True)
        sources = self.source_index(full=full) if fingerprints else None
        windows = assessment_windows(
            paths,
            self.library,
            self.settings,
            resolve_reference=self._resolver(),
            sources=sources,
            last=True,
        )
        return self.run_stream(windows, command="push assessments")

    @during_run
    def run_stream(self, windows: Iterable[Records], *, command: str) -> Report:
        """Sync records that arrive in windows as one run; problems are gathered on the way."""
        report = Report()

        def desired() -> Iterator[list[Desired] | Unchanged]:
            for window in windows:
                report.problems.extend(window.problems)
                report.skipped.extend(window.skipped)
                if window.unchanged or window.files_skipped:
                    yield Unchanged(window.unchanged, window.files_skipped)
                yield LastWindow(window.desired) if window.last else window.desired

        report.result = self.engine(writing=True).run_windows(desired(), command=command)
        counts = report.result.counts
        report.plan = {k: counts[k] for k in ("created", "updated", "unchanged") if counts[k]}
        self._record_problems(report)
        return report

    def goal_records(self, paths: Sequence[Path], *, sources: SourceIndex | None = None) -> Records:
        """Read goal plan files into records (problems kept aside). With ``sources``, files
        unchanged since a run that synced them all are not read (``Records.unchanged``)."""
        return goal_files_records(paths, self.settings, sources=sources)

    def push_goals(
        self,
        paths: Sequence[Path],
        *,
        dry_run: bool = False,
        out_dir: Path | None = None,
        full: bool = False,
        fingerprints: bool = False,
    ) -> Report:
        """Send goal plans as Goals (milestones linked), GAS Observations and a CarePlan.
        With ``fingerprints``, a file unchanged since a run that synced all its records is
        not read (``full``: read every file); off by default, as for a one-off inbox file."""
        sources = None
        if fingerprints and out_dir is None and not (dry_run and full):
            sources = self.source_index(full=full, remember=not dry_run)
        records = self.goal_records(paths, sources=sources)
        return self.run(records, command="push goals", dry_run=dry_run, out_dir=out_dir)

    @during_run
    def sync(
        self,
        *,
        labels_only: bool = False,
        dry_run: bool = False,
        out_dir: Path | None = None,
        full: bool = False,
    ) -> Report:
        """Everything configured, in dependency order: instruments, assessments, goals.
        Assessment and goal files unchanged since a run that synced all their records are
        not read (``full``: read and plan every file)."""
        if out_dir is not None:  # an export to files: always built, against no state
            instruments = self.instrument_records(labels_only=labels_only, against_state=False)
        else:  # unchanged and synced: not built (``app.instrument_fingerprint``)
            keep = not dry_run
            # a first sync will write: ask for the statement while the library loads and
            # the instruments are built (a later sync may have nothing to write, and an
            # unchanged one stays one request)
            if keep and self._capabilities is None and not self.store.holds_records():
                self._early_statement = Prefetch(partial(statement_to_write, self.client))
            made_of = instruments_hash(
                self.library, self.settings, labels_only=labels_only, rules=self.rules
            )

            def build() -> Records:
                return self.instrument_records(labels_only=labels_only)

            instruments = instruments_for_sync(self.store, made_of, build, full=full, remember=keep)
        if dry_run or out_dir is not None:
            records = instruments
            records.extend(
                self.assessment_records(
                    self.settings.assessments,
                    fingerprints=dry_run and not full,
                    remember=False,
                    labels_only=labels_only,
                )
            )
            goal_sources = self.source_index(remember=False) if dry_run and not full else None
            records.extend(self.goal_records(self.settings.goals, sources=goal_sources))
            return self.run(records, command="sync", dry_run=dry_run, out_dir=out_dir)

        def windows() -> Iterator[Records]:
            yield instruments
            sources = self.source_index(full=full, labels_only=labels_only)
            yield from assessment_windows(
                self.settings.assessments,
                self.library,
                self.settings,
                resolve_reference=self._resolver(),
                sources=sources,
            )
            goals = self.goal_records(self.settings.goals, sources=sources)
            goals.last = True
            yield goals

        return self.run_stream(windows(), command="sync")

    def pull_plans(self, patient: str) -> list[Plan]:
        """The goal plans of one patient as on the server, including goals the EHR created
        and linked to a plan. ``patient`` is ``system|value`` or a server id."""
        return pull_plans(self.client, self.settings, resolve_patient(self.client, patient))

    def pull_goal_plans(self, patient: str) -> GoalPull:
        """Like :meth:`pull_plans`, with a problem (server id, JSON path, reason) for each
        Goal or CarePlan that could not be read and was left out."""
        return pull_goal_plans(self.client, self.settings, resolve_patient(self.client, patient))

    # Monitoring

    @during_run
    def monitor(self, *, all_patients: bool = False) -> MonitorResult:
        """Pull new check-ins, score them, evaluate the rules, raise or close alerts."""
        monitor = Monitor(
            self.client,
            self.store,
            self.library,
            self.settings,
            self.rules,
            progress=self.progress,
            capabilities=self.capabilities(),
        )
        return monitor.run(all_patients=all_patients)

    def _reports(self) -> Reports:
        return Reports(self.client, self.library, self.settings, self.rules)

    def report_html(self, patient: str) -> str:
        """The clinician's report of one patient (``system|value``, ``Patient/<id>`` or an
        id) as a self-contained HTML page naming the client only as ``Client <server id>``."""
        return self._reports().report_html(patient)

    def write_report(self, patient: str, out: Path, *, png: Path | None = None) -> list[Path]:
        """Write the report to ``out`` (and a Chromium screenshot to ``png``); the paths
        written."""
        return self._reports().write_report(patient, out, png=png)

    def score_files(self, paths: Sequence[Path]) -> tuple[list[ScoredAssessment], list[Problem]]:
        """Score assessment files without any server: for ``alliance-fhir score``."""
        offline = reference_resolver(self.settings, None)  # the patient map only
        assessments, problems = read_assessment_files(
            paths, self.library, self.settings, resolve_reference=offline
        )
        scored: list[ScoredAssessment] = []
        for assessment in assessments:
            try:
                instrument = self.library.get(assessment.instrument)
                prepared = prepare(instrument, assessment)
                scored.append(
                    ScoredAssessment(prepared, instrument, score(instrument, prepared.answers))
                )
            except InvalidInputError as exc:
                problems.extend(exc.problems)
            except UnknownInstrumentError as exc:
                problems.append(assessment.problem("instrument", str(exc)))
        return scored, problems

    def seed(self, bundle_path: Path) -> int:
        """Load example Patients/Practitioners (a conditional transaction) into a test or
        demo server. Never used against an EHR: there the EHR owns its people."""
        bundle = json.loads(bundle_path.read_text(encoding="utf-8"))
        response = self.client.transaction(bundle)
        return len(response.get("entry") or [])

    # Reading

    def status(self, *, runs: int = 10) -> Status:
        store = self.store
        return Status(
            runs=store.recent_runs(runs),
            records=store.counts_by_status(),
            conflicts=store.conflicts(),
            dead_letters=store.open_dead_letters(),
            sources=store.source_figures(),
        )

    def files_too_open(self) -> list[str]:
        """Existing files this tool keeps patient data in (the state folder, the inbox, the
        default report) that are wider than 0600/0700."""
        state = self.settings.state_path
        roots = [state.parent if state.parent != Path() else state, self.settings.inbox_dir]
        roots += [Path("alliance-report.html"), Path("alliance-report.png")]
        return wider_than_private(roots)

    def doctor(self) -> Doctor:
        """Can we reach the server, and does it offer what we need? (``api.doctor``)"""
        report = Doctor(server_url=self.settings.server_url, reachable=False)
        report.too_open = self.files_too_open()
        if self.settings.state_path.exists():  # doctor creates no state store
            report.sources = self.store.source_figures()
        try:
            statement = self.client.capabilities()
        except FhirError as exc:
            report.error = str(exc)
            return report
        self._capabilities = describe_server(report, statement, self.settings)
        try:
            scopes = check_scopes(self.client, self.settings.smart_scopes)
        except FhirError as exc:
            report.error = str(exc)
            report.reachable = False
            return report
        if scopes is not None:
            report.requested_scope = scopes.requested
            report.granted_scope = scopes.granted
            report.scopes_not_granted = scopes.not_granted
            report.blockers += [
                f"scope {lack} is not granted and sync needs it" for lack in scopes.sync_lacks
            ]
        return report


def as_json(resource: dict[str, Any]) -> str:
    return dumps(resource, indent=2)
