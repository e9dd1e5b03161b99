"""The ``alliance-fhir`` command: a thin layer over ``alliance_fhir.api``.

Every problem is one readable line on stderr and a non-zero exit; no traceback for errors
we raised on purpose. Nothing here logs PHI: output that carries patient data (a plan, a
report) goes to stdout or a file the user named.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from alliance_fhir import __version__
from alliance_fhir import logging as alog
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.exceptions import AllianceFhirError, InvalidInputError, Problem

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
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

    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, **self.overrides)
            alog.configure(level=self._settings.log_level, json=self._settings.log_json)
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
@click.pass_context
def main(
    ctx: click.Context,
    config: Path | None,
    server_url: str | None,
    state_path: Path | None,
    mappings_dir: Path | None,
) -> None:
    """Therapeutic-alliance instruments and collaborative goals, synced to an EHR over FHIR R4.

    Configuration comes from a TOML file and ALLIANCE_FHIR_* environment variables; secrets
    (ALLIANCE_FHIR_TOKEN, ALLIANCE_FHIR_PASSWORD, key files) never come from the command line.
    """
    overrides = {"server_url": server_url, "state_path": state_path, "mappings_dir": mappings_dir}
    ctx.obj = Ctx(config, overrides)
    alog.configure(level="WARNING")


def _api(ctx: Ctx) -> Any:
    from alliance_fhir.api import AllianceFhir

    return AllianceFhir(ctx.settings)


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


if __name__ == "__main__":  # pragma: no cover
    main()
