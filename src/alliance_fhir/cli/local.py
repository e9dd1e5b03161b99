"""Commands that work on local files and settings only: scoring and the effective config."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alliance_fhir.api import as_json
from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.render import notes, out, problems, score_table
from alliance_fhir.exit_codes import ExitCode


@click.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@pass_ctx
def config_show(ctx: Ctx) -> None:
    """Print the effective configuration as JSON, secrets masked."""
    click.echo(json.dumps(ctx.settings.masked(), indent=2, sort_keys=True))


@click.command("score")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option(
    "--fhir",
    "as_fhir",
    is_flag=True,
    help="Print the QuestionnaireResponse and Observation JSON instead of a table.",
)
@pass_ctx
def score_cmd(ctx: Ctx, paths: tuple[Path, ...], as_fhir: bool) -> None:
    """Score assessment files (YAML/JSON records, CSV, FHIR QuestionnaireResponses)."""
    with open_api(ctx) as api:
        if as_fhir:
            records = api.assessment_records(list(paths))
            for record in records.desired:
                click.echo(as_json(record.resource))
            problems(records.problems)
            notes(records.skipped)
            raise SystemExit(ExitCode.FAILED if records.problems else ExitCode.OK)
        scored, found = api.score_files(list(paths))
    out.print(score_table(scored))
    problems(found)
    raise SystemExit(ExitCode.FAILED if found else ExitCode.OK)
