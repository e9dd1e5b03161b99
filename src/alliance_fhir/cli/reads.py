"""Commands that read: a patient's goal plans, the monitor run, the clinician report, and
the local state store's status."""

from __future__ import annotations

from pathlib import Path

import click

from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.render import echo, out, print_monitor, print_status, problems
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.goals import render_plans_text

patient_option = click.option(
    "--patient",
    required=True,
    help="Patient identifier as system|value, or the server's Patient id.",
)


@click.group()
def pull() -> None:
    """Read from the server."""


@pull.command("goals")
@patient_option
@pass_ctx
def pull_goals(ctx: Ctx, patient: str) -> None:
    """Print a patient's goal plans as a clinician would read them.

    A Goal or CarePlan that cannot be read is one ``error:`` line (server id, JSON path,
    reason) and exit 1; the rest is printed."""
    with open_api(ctx) as api:
        pulled = api.pull_goal_plans(patient)
    if not pulled.plans:
        out.print("no goal plans on the server for this patient", markup=False)
    else:
        echo(render_plans_text(pulled.plans))
    problems(pulled.problems)
    if pulled.problems:
        raise SystemExit(ExitCode.FAILED)


@click.command()
@click.option(
    "--all",
    "all_patients",
    is_flag=True,
    help="Evaluate every patient with a response, not only those touched since the last run.",
)
@pass_ctx
def monitor(ctx: Ctx, all_patients: bool) -> None:
    """Pull new check-ins, score them, evaluate the alliance rules, raise or close alerts."""
    with open_api(ctx) as api:
        result = api.monitor(all_patients=all_patients)
    print_monitor(result)
    raise SystemExit(ExitCode.OK if result.ok else ExitCode.FAILED)


@click.command("report")
@patient_option
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
def report_cmd(ctx: Ctx, patient: str, out_file: Path, png_file: Path | None) -> None:
    """Write a clinician's alliance report (self-contained HTML, optional PNG) for one patient."""
    with open_api(ctx) as api:
        written = api.write_report(patient, out_file, png=png_file)
    for path in written:
        out.print(f"wrote {path}", markup=False)


@click.command()
@click.option("--runs", default=10, show_default=True, help="How many recent runs to list.")
@pass_ctx
def status(ctx: Ctx, runs: int) -> None:
    """Recent runs, record counts, conflicts and dead letters from the state store."""
    with open_api(ctx) as api:
        st = api.status(runs=runs)
    print_status(st)
