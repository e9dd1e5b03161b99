"""Commands about instruments and definition files; none of them needs a server."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.render import out, problems
from alliance_fhir.exit_codes import ExitCode


@click.group()
def instruments() -> None:
    """List, inspect and render the alliance instruments."""


@instruments.command("list")
@pass_ctx
def instruments_list(ctx: Ctx) -> None:
    """One line per instrument: id, version, respondent, items, wording, title."""
    with open_api(ctx) as api:
        for inst in api.library.all():
            wording = "own wording" if inst.wording == "own" else "licensed wording"
            out.print(
                f"{inst.id}\t{inst.version}\t{inst.respondent}\t{len(inst.items)} items\t"
                f"{wording}\t{inst.title}",
                markup=False,
            )


@instruments.command("show")
@click.argument("instrument_id")
@pass_ctx
def instruments_show(ctx: Ctx, instrument_id: str) -> None:
    """Items, scales, subscales and scoring of one instrument."""
    with open_api(ctx) as api:
        inst = api.library.get(instrument_id)
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
def instruments_render(
    ctx: Ctx, instrument_id: str, overlay: Path | None, labels_only: bool
) -> None:
    """Print the FHIR R4 Questionnaire JSON of an instrument."""
    with open_api(ctx) as api:
        text = api.render_questionnaire(instrument_id, overlay=overlay, labels_only=labels_only)
    click.echo(text)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@pass_ctx
def validate(ctx: Ctx, paths: tuple[Path, ...]) -> None:
    """Check instrument, overlay, rule and goal files; one line per problem."""
    with open_api(ctx) as api:
        found = api.validate(list(paths))
    if found:
        problems(found)
        raise SystemExit(ExitCode.FAILED)
    out.print(f"ok: {len(paths)} path(s) valid", markup=False)
