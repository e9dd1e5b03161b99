"""Commands that write to the server (or, with ``--out``, to bundle files): publish, push,
sync. Exit 0 when every record was written or unchanged, 1 when any failed."""

from __future__ import annotations

from pathlib import Path

import click

from alliance_fhir.api import Report
from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.render import print_report
from alliance_fhir.exit_codes import ExitCode

dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan; write nothing.")
out_option = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write transaction bundles to this directory instead of a server.",
)

full_option = click.option(
    "--full",
    is_flag=True,
    help="Read and plan every assessment and goal file, also those unchanged since a run "
    "that synced all their records (skipped otherwise).",
)


def finish(report: Report, *, dry_run: bool) -> None:
    """Print the report and exit with its code."""
    print_report(report, dry_run=dry_run)
    raise SystemExit(ExitCode.OK if report.ok else ExitCode.FAILED)


@click.command()
@click.option(
    "--labels-only",
    is_flag=True,
    help="Publish licensed instruments with our neutral labels when no overlay exists.",
)
@click.option("--instrument", "instrument_ids", multiple=True, help="Only these instruments.")
@dry_run_option
@out_option
@pass_ctx
def publish(
    ctx: Ctx,
    labels_only: bool,
    instrument_ids: tuple[str, ...],
    dry_run: bool,
    out_dir: Path | None,
) -> None:
    """Publish our CodeSystem and the instruments' Questionnaires."""
    with open_api(ctx) as api:
        report = api.publish(
            labels_only=labels_only,
            instruments=instrument_ids or None,
            dry_run=dry_run,
            out_dir=out_dir,
        )
    finish(report, dry_run=dry_run)


@click.group()
def push() -> None:
    """Send assessments or goal plans to the server."""


@push.command("assessments")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@dry_run_option
@out_option
@full_option
@pass_ctx
def push_assessments(
    ctx: Ctx, paths: tuple[Path, ...], dry_run: bool, out_dir: Path | None, full: bool
) -> None:
    """Send assessments as QuestionnaireResponse + score Observation (idempotent)."""
    with open_api(ctx) as api:
        report = api.push_assessments(list(paths), dry_run=dry_run, out_dir=out_dir, full=full)
    finish(report, dry_run=dry_run)


@push.command("goals")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@dry_run_option
@out_option
@full_option
@pass_ctx
def push_goals(
    ctx: Ctx, paths: tuple[Path, ...], dry_run: bool, out_dir: Path | None, full: bool
) -> None:
    """Send goal plans as Goals with milestones, GAS Observations and a CarePlan."""
    with open_api(ctx) as api:
        report = api.push_goals(
            list(paths), dry_run=dry_run, out_dir=out_dir, full=full, fingerprints=True
        )
    finish(report, dry_run=dry_run)


@click.command()
@click.option(
    "--labels-only",
    is_flag=True,
    help="Publish licensed instruments with our neutral labels when no overlay exists.",
)
@dry_run_option
@out_option
@full_option
@pass_ctx
def sync(ctx: Ctx, labels_only: bool, dry_run: bool, out_dir: Path | None, full: bool) -> None:
    """Publish instruments, push the configured assessments and goal plans."""
    with open_api(ctx) as api:
        report = api.sync(labels_only=labels_only, dry_run=dry_run, out_dir=out_dir, full=full)
    finish(report, dry_run=dry_run)
