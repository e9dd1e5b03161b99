"""The ``alliance-fhir`` command: a thin layer over ``alliance_fhir.api``.

Every problem is one readable line on stderr and an exit code from
``alliance_fhir.exit_codes``; never a traceback (``errors``). Nothing here logs PHI: output
that carries patient data (a plan, a report) goes to stdout or a file the user named.

Commands live in modules by job: ``instruments`` (list/show/render, validate), ``local``
(score, config), ``writes`` (publish, push, sync), ``reads`` (pull, monitor, report,
status), ``run`` (doctor, daemon), ``serve`` (the web app), ``checkin`` (check-in links)
and ``demo``; ``render`` and ``progress`` draw the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from alliance_fhir import __version__
from alliance_fhir import log as alog
from alliance_fhir.cli.checkin import checkin
from alliance_fhir.cli.context import Ctx
from alliance_fhir.cli.demo import demo
from alliance_fhir.cli.errors import guarded
from alliance_fhir.cli.instruments import instruments, validate
from alliance_fhir.cli.local import config, score_cmd
from alliance_fhir.cli.reads import monitor, pull, report_cmd, status
from alliance_fhir.cli.run import daemon, doctor
from alliance_fhir.cli.serve import serve
from alliance_fhir.cli.writes import publish, push, sync

__all__ = ["main"]


class _Guarded(click.Group):
    """The top-level group: every command runs inside ``errors.guarded``."""

    def invoke(self, ctx: click.Context) -> Any:
        return guarded(
            lambda: super(_Guarded, self).invoke(ctx),
            lambda: bool(getattr(ctx.obj, "show_server_text", False)),
        )


@click.group(
    cls=_Guarded,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
@click.option(
    "--tenant",
    envvar="ALLIANCE_FHIR_TENANT",
    help="The [tenants.NAME] section to act for ($ALLIANCE_FHIR_TENANT). With tenants "
    "configured, commands on a server need one; status, doctor and daemon without one run "
    "for every tenant.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also print the run's structured log lines.")
@click.option(
    "--show-server-text",
    is_flag=True,
    help="On a terminal, also print the server's error text (it may echo patient data).",
)
@click.pass_context
def main(
    ctx: click.Context,
    config: Path | None,
    server_url: str | None,
    state_path: Path | None,
    mappings_dir: Path | None,
    tenant: str | None,
    verbose: bool,
    show_server_text: bool,
) -> None:
    """Therapeutic-alliance instruments and collaborative goals, synced to an EHR over FHIR R4.

    Configuration comes from a TOML file and ALLIANCE_FHIR_* environment variables; secrets
    (ALLIANCE_FHIR_TOKEN, ALLIANCE_FHIR_PASSWORD, key files) never come from the command line.
    """
    overrides = {"server_url": server_url, "state_path": state_path, "mappings_dir": mappings_dir}
    overrides["tenant"] = tenant
    ctx.obj = Ctx(
        config,
        overrides,
        verbose or ctx.invoked_subcommand == "daemon",
        command=ctx.invoked_subcommand,
    )
    ctx.obj.show_server_text = show_server_text
    alog.configure(level="WARNING")


for _command in (
    instruments,
    validate,
    config,
    score_cmd,
    doctor,
    publish,
    push,
    pull,
    sync,
    daemon,
    monitor,
    report_cmd,
    status,
    demo,
    # the web app and its links
    serve,
    checkin,
):
    main.add_command(_command)
