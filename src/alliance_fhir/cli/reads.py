"""Commands that read: a patient's goal plans, the monitor run, the clinician report, and
the local state store's status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from alliance_fhir.api.workers import queue_status
from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.render import (
    echo,
    err,
    out,
    print_monitor,
    print_queue,
    print_status,
    problems,
)
from alliance_fhir.config import Settings
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.goals import render_plans_text
from alliance_fhir.tenants import all_tenant_settings

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
    """Write a clinician's alliance report (self-contained HTML, optional PNG) for one patient.

    Besides scores, alerts and goals, the report quotes what the client said: their written
    answers of recent check-ins and the lowest-rated items of the last one. Both files are
    therefore patient data: they are written 0600 (folders created 0700); keep them so.
    """
    with open_api(ctx) as api:
        written = api.write_report(patient, out_file, png=png_file)
    for path in written:
        out.print(f"wrote {path}", markup=False)


#: Why ``status --show-values`` refuses when stdout is not a terminal.
NOT_A_TERMINAL = (
    "status --show-values: refused: the values are patient data and are shown only on an "
    "interactive terminal (stdout is not one)"
)


@click.command()
@click.option("--runs", default=10, show_default=True, help="How many recent runs to list.")
@click.option(
    "--show-values",
    is_flag=True,
    help="Also show each conflicting field's values (ours / the EHR's / base); patient data, "
    "so only on an interactive terminal, and never logged.",
)
@pass_ctx
def status(ctx: Ctx, runs: int, show_values: bool) -> None:
    """Recent runs, record counts, conflicts and dead letters from the state store (with
    tenants configured and none selected: each tenant's, under a ``tenant: NAME`` line)."""
    if show_values and not out.is_terminal:
        err.print(NOT_A_TERMINAL, markup=False)
        raise SystemExit(ExitCode.CONFIG)
    names = ctx.every_tenant
    if not names:
        _status(ctx, None, runs, show_values)
        return
    tenants = all_tenant_settings(ctx.root_settings)
    for name in names:
        out.print(f"tenant: {name}", markup=False)
        _status(ctx, tenants[name], runs, show_values)


def _status(ctx: Ctx, settings: Settings | None, runs: int, show_values: bool) -> None:
    with open_api(ctx, settings) as api:
        st = api.status(runs=runs)
        queue = queue_status(api)
        values = (
            {(c.kind, c.key): api.store.conflict_values(c.kind, c.key) for c in st.conflicts}
            if show_values
            else {}
        )
    print_status(st)
    if not queue.empty:  # several daemons share this store (PostgreSQL)
        print_queue(queue)
    for (kind, key), fields in values.items():
        for name, sides in sorted(fields.items()):
            shown = " / ".join(
                f"{side} {_value(sides.get(side))}" for side in ("ours", "ehr", "base")
            )
            out.print(f"  values: {kind}/{key} {name}: {shown}", markup=False)


def _value(value: Any) -> str:
    """A field's value on one line (compact JSON; ``-`` where that side has none)."""
    if value is None:
        return "-"
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
