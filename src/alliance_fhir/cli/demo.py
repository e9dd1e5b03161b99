"""``alliance-fhir demo``: the main job, scripted, on the example clinic (``make demo``)."""

from __future__ import annotations

from pathlib import Path

import click

from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.render import out, print_monitor, print_report
from alliance_fhir.exit_codes import ExitCode


@click.command()
@click.option(
    "--examples",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=Path("examples"),
    show_default=True,
    help="The example clinic directory.",
)
@pass_ctx
def demo(ctx: Ctx, examples: Path) -> None:
    """Run the main job on the example clinic against a local test server.

    Seeds the example Patients and Practitioners (a demo server only: in an EHR they exist
    already), publishes the instruments with our labels, pushes the check-ins and the goal
    plans, and prints a summary. Safe to run again: the second run writes nothing.
    """
    with open_api(ctx) as api:
        seeded = api.seed(examples / "clinic" / "people.json")
        out.print(
            f"server: {ctx.settings.server_url} ({seeded} example people present)", markup=False
        )
        total = api.publish(labels_only=True)
        print_report(total)
        for label, report in (
            ("assessments", api.push_assessments([examples / "clinic" / "assessments"])),
            ("goals", api.push_goals([examples / "goals"])),
        ):
            out.print(f"{label}:", markup=False, end=" ")
            print_report(report)
            total.merge(report)
        result = api.monitor(all_patients=True)
    print_monitor(result)
    if total.result is not None:
        res = total.result
        out.print(
            f"demo done: {res.counts['created']} created, {res.counts['updated']} updated, "
            f"{res.counts['unchanged']} unchanged, {res.counts['conflict']} conflicts, "
            f"{res.counts['rejected']} rejected; {len(total.problems)} input problems",
            markup=False,
        )
    ok = total.result is not None and total.result.ok and result.ok
    raise SystemExit(ExitCode.OK if ok else ExitCode.FAILED)
