"""The ``alliance-fhir`` command: a thin layer over ``alliance_fhir.api``.

Every problem is one readable line on stderr and a non-zero exit; no traceback for errors
we raised on purpose. Nothing here logs PHI: output that carries patient data (a plan, a
report) goes to stdout or a file the user named.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from alliance_fhir import __version__
from alliance_fhir import log as alog
from alliance_fhir.api import as_json
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.exceptions import AllianceFhirError, InvalidInputError, Problem

F = TypeVar("F", bound=Callable[..., Any])

# Wide enough for tables when piped or captured (no terminal to measure).
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(lines: Sequence[str], code: int = 1) -> NoReturn:
    for line in lines:
        err.print(line, markup=False)
    sys.exit(code)


def _problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        err.print(f"error: {problem}", markup=False)


def handles_errors(func: F) -> F:
    """Turn our exceptions into one line per problem and exit code 1 (2 for config)."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InvalidInputError as exc:
            _fail([f"error: {p}" for p in exc.problems])
        except AllianceFhirError as exc:
            _fail(
                [f"error: {alog.scrub(str(exc))}"], code=2 if "Config" in type(exc).__name__ else 1
            )

    return wrapper  # type: ignore[return-value]  # wraps keeps the signature click reads


class Ctx:
    """Lazily loaded settings shared by the subcommands."""

    def __init__(self, config: Path | None, overrides: dict[str, Any], verbose: bool) -> None:
        self.config = config
        self.overrides = overrides
        self.verbose = verbose
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, **self.overrides)
            # Interactive commands print their own summary; the run's log lines (PHI-free)
            # show with --verbose. The daemon logs at the configured level.
            level = self._settings.log_level if self.verbose else "WARNING"
            alog.configure(level=level, json=self._settings.log_json)
        return self._settings


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="alliance-fhir")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False),
    help="TOML config file (default: $ALLIANCE_FHIR_CONFIG or ./alliance-fhir.toml).",
)
@click.option("--server-url", help="FHIR base URL (overrides the config).")
@click.option("--state", "state_path", type=click.Path(path_type=Path), help="State store file.")
@click.option(
    "--mappings",
    "mappings_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Clinic mappings directory adding to or overriding the bundled instruments.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also print the run's structured log lines.")
@click.pass_context
def main(
    ctx: click.Context,
    config: Path | None,
    server_url: str | None,
    state_path: Path | None,
    mappings_dir: Path | None,
    verbose: bool,
) -> None:
    """Therapeutic-alliance instruments and collaborative goals, synced to an EHR over FHIR R4.

    Configuration comes from a TOML file and ALLIANCE_FHIR_* environment variables; secrets
    (ALLIANCE_FHIR_TOKEN, ALLIANCE_FHIR_PASSWORD, key files) never come from the command line.
    """
    overrides = {"server_url": server_url, "state_path": state_path, "mappings_dir": mappings_dir}
    ctx.obj = Ctx(config, overrides, verbose or ctx.invoked_subcommand == "daemon")
    alog.configure(level="WARNING")


class _Bar:
    """A rich progress bar for long runs, drawn only on a terminal."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._task: Any = None
        self._left = 0

    def start(self, total: int) -> None:
        from rich.progress import Progress

        self.stop()
        if total < 200 or not err.is_terminal:
            return
        self._progress = Progress(console=err, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("writing", total=total)
        self._left = total

    def advance(self, done: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, done)
            self._left -= done
            if self._left <= 0:
                self.stop()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _api(ctx: Ctx) -> Any:
    from alliance_fhir.api import AllianceFhir

    api = AllianceFhir(ctx.settings)
    api.progress = _Bar()
    return api


# -- instruments -------------------------------------------------------------------------


@main.group()
def instruments() -> None:
    """List, inspect and render the alliance instruments."""


@instruments.command("list")
@pass_ctx
@handles_errors
def instruments_list(ctx: Ctx) -> None:
    """One line per instrument: id, version, respondent, items, wording, title."""
    for inst in _api(ctx).library.all():
        wording = "own wording" if inst.wording == "own" else "licensed wording"
        out.print(
            f"{inst.id}\t{inst.version}\t{inst.respondent}\t{len(inst.items)} items\t"
            f"{wording}\t{inst.title}",
            markup=False,
        )


@instruments.command("show")
@click.argument("instrument_id")
@pass_ctx
@handles_errors
def instruments_show(ctx: Ctx, instrument_id: str) -> None:
    """Items, scales, subscales and scoring of one instrument."""
    inst = _api(ctx).library.get(instrument_id)
    out.print(f"[bold]{inst.title}[/bold]  ({inst.id} {inst.version}, {inst.respondent} form)")
    out.print(f"url: {inst.url}", markup=False)
    out.print(f"licence: {inst.licence}", markup=False)
    table = Table("linkId", "label", "type", "answers", "subscale", "reverse", "required")
    for item in inst.items:
        if item.scale:
            scale = inst.scale(item.scale)
            answers = f"{scale.id} {scale.min_value:g}-{scale.max_value:g}"
        elif item.analogue:
            answers = f"{item.analogue.min:g}-{item.analogue.max:g}"
        else:
            answers = "free text"
        table.add_row(
            item.link_id,
            item.label,
            item.type,
            answers,
            item.subscale or "",
            "yes" if item.reverse else "",
            "yes" if item.required else "",
        )
    out.print(table)
    s = inst.scoring
    for sdef in (s.total, *s.subscales):
        pr = sdef.proration
        rule = (
            pr.method
            if pr.method == "none"
            else (
                f"mean (min {pr.min_answered or ''}{' ' if pr.min_answered else ''}"
                f"{f'{pr.min_fraction:.0%}' if pr.min_fraction else ''})"
            )
        )
        out.print(f"score {sdef.id}: {sdef.method}, proration {rule}", markup=False)
    if s.cutoff:
        out.print(f"cutoff: {s.cutoff.rule} {s.cutoff.value:g} ({s.cutoff.meaning})", markup=False)
    if s.reliable_change:
        out.print(f"reliable change: {s.reliable_change:g}", markup=False)
    for band in s.bands:
        flag = " (concern)" if band.concern else ""
        out.print(f"band {band.code}: {band.low:g}-{band.high:g} {band.label}{flag}", markup=False)


@instruments.command("render")
@click.argument("instrument_id")
@click.option(
    "--overlay",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Licensee overlay with the official wording.",
)
@click.option(
    "--labels-only",
    is_flag=True,
    help="Render a licensed instrument with our neutral labels instead of its wording.",
)
@pass_ctx
@handles_errors
def instruments_render(
    ctx: Ctx, instrument_id: str, overlay: Path | None, labels_only: bool
) -> None:
    """Print the FHIR R4 Questionnaire JSON of an instrument."""
    text = _api(ctx).render_questionnaire(instrument_id, overlay=overlay, labels_only=labels_only)
    click.echo(text)


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@pass_ctx
@handles_errors
def validate(ctx: Ctx, paths: tuple[Path, ...]) -> None:
    """Check instrument, overlay, rule and goal files; one line per problem."""
    problems = _api(ctx).validate(list(paths))
    if problems:
        _problems(problems)
        sys.exit(1)
    out.print(f"ok: {len(paths)} path(s) valid", markup=False)


# -- config ------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@pass_ctx
@handles_errors
def config_show(ctx: Ctx) -> None:
    """Print the effective configuration as JSON, secrets masked."""
    click.echo(json.dumps(ctx.settings.masked(), indent=2, sort_keys=True))


# -- scoring -----------------------------------------------------------------------------


@main.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--fhir",
    "as_fhir",
    is_flag=True,
    help="Print the QuestionnaireResponse and Observation JSON instead of a table.",
)
@pass_ctx
@handles_errors
def score_cmd(ctx: Ctx, paths: tuple[Path, ...], as_fhir: bool) -> None:
    """Score assessment files (YAML/JSON records, CSV, FHIR QuestionnaireResponses)."""
    api = _api(ctx)
    if as_fhir:
        records = api.assessment_records(list(paths))
        for record in records.desired:
            click.echo(as_json(record.resource))
        _problems(records.problems)
        for note in records.skipped:
            err.print(f"note: {note}", markup=False)
        sys.exit(1 if records.problems else 0)
    scored, problems = api.score_files(list(paths))
    table = Table("assessment", "instrument", "authored", "total", "subscales", "band", "note")
    for item in scored:
        sc = item.scores
        total = "-" if sc.total.value is None else f"{sc.total.value:g}"
        subs = ", ".join(
            f"{s.id} {'-' if s.value is None else f'{s.value:g}'}" for s in sc.subscales
        )
        note = sc.total.reason or ("below cutoff" if sc.below_cutoff else "")
        table.add_row(
            item.assessment.key,
            item.instrument.id,
            item.assessment.authored.isoformat(),
            total,
            subs,
            sc.band.label if sc.band else "",
            note,
        )
    out.print(table)
    _problems(problems)
    sys.exit(1 if problems else 0)


# -- server ------------------------------------------------------------------------------


def _print_report(report: Any, *, dry_run: bool = False) -> None:
    for note in report.skipped:
        err.print(f"note: {note}", markup=False)
    _problems(report.problems)
    if report.written:
        out.print(
            f"wrote {len(report.written)} bundle file(s) to {report.written[0].parent}",
            markup=False,
        )
        return
    plan = ", ".join(f"{k} {v}" for k, v in sorted(report.plan.items())) or "nothing to do"
    if dry_run or report.result is None:
        out.print(f"plan: {plan}", markup=False)
        return
    res = report.result
    summary = ", ".join(f"{k} {v}" for k, v in res.summary().items())
    out.print(
        f"run {res.run_id}: {summary} ({res.bundles} bundles, {res.seconds:.1f}s)", markup=False
    )
    for failure in res.failures:
        err.print(f"failed: {failure}", markup=False)


def _exit_for(report: Any) -> None:
    sys.exit(0 if report.ok else 1)


dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
out_option = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write transaction bundles to this directory instead of a server.",
)


@main.command()
@pass_ctx
@handles_errors
def doctor(ctx: Ctx) -> None:
    """Check that the server is reachable, authorised and offers what we need."""
    report = _api(ctx).doctor()
    out.print(f"server: {report.server_url}", markup=False)
    if not report.reachable:
        _fail([f"error: cannot use the server: {report.error}"])
    out.print(
        f"FHIR version: {report.fhir_version} ({report.software or 'unknown software'})",
        markup=False,
    )
    for missing in report.missing:
        err.print(f"missing: {missing}", markup=False)
    if not (report.fhir_version or "").startswith("4.0"):
        err.print("error: alliance-fhir needs a FHIR R4 (4.0.x) server", markup=False)
    out.print("ok" if report.ok else "not ready", markup=False)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option(
    "--labels-only",
    is_flag=True,
    help="Publish licensed instruments with our neutral labels when no overlay exists.",
)
@click.option("--instrument", "instrument_ids", multiple=True, help="Only these instruments.")
@dry_run_option
@out_option
@pass_ctx
@handles_errors
def publish(
    ctx: Ctx,
    labels_only: bool,
    instrument_ids: tuple[str, ...],
    dry_run: bool,
    out_dir: Path | None,
) -> None:
    """Publish our CodeSystem and the instruments' Questionnaires."""
    report = _api(ctx).publish(
        labels_only=labels_only,
        instruments=instrument_ids or None,
        dry_run=dry_run,
        out_dir=out_dir,
    )
    _print_report(report, dry_run=dry_run)
    _exit_for(report)


@main.group()
def push() -> None:
    """Send assessments or goal plans to the server."""


@push.command("assessments")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@dry_run_option
@out_option
@pass_ctx
@handles_errors
def push_assessments(
    ctx: Ctx, paths: tuple[Path, ...], dry_run: bool, out_dir: Path | None
) -> None:
    """Send assessments as QuestionnaireResponse + score Observation (idempotent)."""
    report = _api(ctx).push_assessments(list(paths), dry_run=dry_run, out_dir=out_dir)
    _print_report(report, dry_run=dry_run)
    _exit_for(report)


@push.command("goals")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@dry_run_option
@out_option
@pass_ctx
@handles_errors
def push_goals(ctx: Ctx, paths: tuple[Path, ...], dry_run: bool, out_dir: Path | None) -> None:
    """Send goal plans as Goals with milestones, GAS Observations and a CarePlan."""
    report = _api(ctx).push_goals(list(paths), dry_run=dry_run, out_dir=out_dir)
    _print_report(report, dry_run=dry_run)
    _exit_for(report)


@main.group()
def pull() -> None:
    """Read from the server."""


@pull.command("goals")
@click.option(
    "--patient",
    required=True,
    help="Patient identifier as system|value, or the server's Patient id.",
)
@pass_ctx
@handles_errors
def pull_goals(ctx: Ctx, patient: str) -> None:
    """Print a patient's goal plans as a clinician would read them."""
    from alliance_fhir.goals import render_plan_text

    plans = _api(ctx).pull_plans(patient)
    if not plans:
        out.print("no goal plans on the server for this patient", markup=False)
    for plan in plans:
        click.echo(render_plan_text(plan))


@main.command()
@click.option(
    "--labels-only",
    is_flag=True,
    help="Publish licensed instruments with our neutral labels when no overlay exists.",
)
@dry_run_option
@out_option
@pass_ctx
@handles_errors
def sync(ctx: Ctx, labels_only: bool, dry_run: bool, out_dir: Path | None) -> None:
    """Publish instruments, push the configured assessments and goal plans."""
    report = _api(ctx).sync(labels_only=labels_only, dry_run=dry_run, out_dir=out_dir)
    _print_report(report, dry_run=dry_run)
    _exit_for(report)


@main.command()
@click.option("--once", is_flag=True, help="Run one cycle and exit (0 if it succeeded).")
@click.option(
    "--labels-only",
    is_flag=True,
    help="Publish licensed instruments with neutral labels when no overlay exists.",
)
@click.option(
    "--settle-seconds",
    type=float,
    default=2.0,
    show_default=True,
    help="An inbox file must be unchanged this long before it is taken.",
)
@click.option("--backoff-max", type=float, default=None, help="Cap of the outage back-off (s).")
@click.option("--no-metrics", is_flag=True, help="No /healthz, /readyz, /metrics listener.")
@click.option("--no-monitoring", is_flag=True, help="Skip the monitoring step.")
@pass_ctx
@handles_errors
def daemon(
    ctx: Ctx,
    once: bool,
    labels_only: bool,
    settle_seconds: float,
    backoff_max: float | None,
    no_metrics: bool,
    no_monitoring: bool,
) -> None:
    """Run unattended: publish, ingest the inbox, push, monitor; every interval."""
    from alliance_fhir.daemon import DaemonOptions, run

    sys.exit(
        run(
            ctx.settings,
            DaemonOptions(
                once=once,
                labels_only=labels_only,
                settle_seconds=settle_seconds,
                backoff_max=backoff_max,
                metrics=not no_metrics,
                monitoring=not no_monitoring,
            ),
        )
    )


@main.command()
@click.option(
    "--all",
    "all_patients",
    is_flag=True,
    help="Evaluate every patient with a response, not only those touched since the last run.",
)
@pass_ctx
@handles_errors
def monitor(ctx: Ctx, all_patients: bool) -> None:
    """Pull new check-ins, score them, evaluate the alliance rules, raise or close alerts."""
    with _api(ctx) as api:
        result = api.monitor(all_patients=all_patients)
    _print_monitor(result)
    sys.exit(0 if result.ok else 1)


def _print_monitor(result: Any) -> None:
    alerts = ", ".join(f"{k} {v}" for k, v in sorted(result.alerts.items())) or "none"
    out.print(
        f"monitor: pulled {result.pulled} responses ({result.external} completed "
        f"elsewhere scored); {len(result.patients)} patients evaluated; alerts: {alerts}",
        markup=False,
    )
    for line in result.not_scored:
        err.print(f"not scored: {line}", markup=False)
    for line in result.failures:
        err.print(f"failed: {line}", markup=False)


@main.command("report")
@click.option(
    "--patient",
    required=True,
    help="Patient identifier as system|value, or the server's Patient id.",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("alliance-report.html"),
    show_default=True,
)
@click.option(
    "--png",
    "png_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also save a screenshot (needs chromium).",
)
@pass_ctx
@handles_errors
def report_cmd(ctx: Ctx, patient: str, out_file: Path, png_file: Path | None) -> None:
    """Write a clinician's alliance report (self-contained HTML, optional PNG) for one patient."""
    with _api(ctx) as api:
        written = api.write_report(patient, out_file, png=png_file)
    for path in written:
        out.print(f"wrote {path}", markup=False)


@main.command()
@click.option("--runs", default=10, show_default=True, help="How many recent runs to list.")
@pass_ctx
@handles_errors
def status(ctx: Ctx, runs: int) -> None:
    """Recent runs, record counts, conflicts and dead letters from the state store."""
    st = _api(ctx).status(runs=runs)
    table = Table("run", "command", "started (UTC)", "outcome", "counts")
    for run in st.runs:
        started = datetime.fromtimestamp(run.started, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()) if v)
        table.add_row(run.run_id, run.command, started, run.outcome or "running", counts)
    out.print(table)
    records = ", ".join(f"{k} {v}" for k, v in sorted(st.records.items())) or "none"
    out.print(f"records: {records}", markup=False)
    out.print(f"conflicts: {len(st.conflicts)}", markup=False)
    for c in st.conflicts:
        out.print(
            f"  conflict: {c.kind}/{c.key} ({c.resource_type}/{c.server_id}) changed on "
            "the server since our last write; not overwritten",
            markup=False,
        )
    out.print(f"dead letters: {len(st.dead_letters)}", markup=False)
    for d in st.dead_letters:
        status_text = f" HTTP {d.http_status}" if d.http_status else ""
        out.print(
            f"  rejected: {d.kind}/{d.key}{status_text}: {alog.scrub(d.reason)}", markup=False
        )


@main.command()
@click.option(
    "--examples",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("examples"),
    show_default=True,
    help="The example clinic directory.",
)
@pass_ctx
@handles_errors
def demo(ctx: Ctx, examples: Path) -> None:
    """Run the main job on the example clinic against a local test server.

    Seeds the example Patients and Practitioners (a demo server only: in an EHR they exist
    already), publishes the instruments with our labels, pushes the check-ins and the goal
    plans, and prints a summary. Safe to run again: the second run writes nothing.
    """
    api = _api(ctx)
    seeded = api.seed(examples / "clinic" / "people.json")
    out.print(f"server: {ctx.settings.server_url} ({seeded} example people present)", markup=False)
    total = api.publish(labels_only=True)
    _print_report(total)
    for label, report in (
        ("assessments", api.push_assessments([examples / "clinic" / "assessments"])),
        ("goals", api.push_goals([examples / "goals"])),
    ):
        out.print(f"{label}:", markup=False, end=" ")
        _print_report(report)
        total.merge(report)
    result = api.monitor(all_patients=True)
    _print_monitor(result)
    if total.result is not None:
        res = total.result
        out.print(
            f"demo done: {res.counts['created']} created, {res.counts['updated']} updated, "
            f"{res.counts['unchanged']} unchanged, {res.counts['conflict']} conflicts, "
            f"{res.counts['rejected']} rejected; {len(total.problems)} input problems",
            markup=False,
        )
    sys.exit(0 if total.result is not None and total.result.ok and result.ok else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
