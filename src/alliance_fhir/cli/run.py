"""Commands about running against a server: the readiness check and the daemon."""

from __future__ import annotations

import dataclasses
import json

import click

from alliance_fhir.api import Doctor
from alliance_fhir.cli.context import Ctx, open_api, pass_ctx
from alliance_fhir.cli.errors import fail
from alliance_fhir.cli.render import err, out, sources_line
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.tenants import all_tenant_settings


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The report as JSON on stdout.")
@pass_ctx
def doctor(ctx: Ctx, as_json: bool) -> None:
    """Check that the server is reachable, authorised and offers what sync needs: per
    resource type what it allows, the write strategy and the guarantee that holds; with
    SMART credentials, the scope granted against the scope asked for.

    Exit 0 when sync can run safely, 2 (one line per blocker, e.g. a scope sync needs that
    was not granted) when it cannot, 4 when the server or its token endpoint cannot be
    reached or refuses our credentials. With tenants configured and none selected, every
    tenant is checked (a ``tenant: NAME`` line before each; JSON: by name) and the exit code
    is the worst of theirs."""
    names = ctx.every_tenant
    if not names:
        raise SystemExit(_doctor(ctx, None, as_json=as_json, exit_now=True))
    tenants = all_tenant_settings(ctx.root_settings)
    codes: list[int] = []
    reports: dict[str, object] = {}
    for name in names:
        if not as_json:
            out.print(f"tenant: {name}", markup=False)
        try:
            codes.append(_doctor(ctx, tenants[name], as_json=as_json, collect=reports, name=name))
        except ConfigError as exc:  # this tenant's settings; the others are still checked
            err.print(f"error: tenant {name}: {exc}", markup=False)
            codes.append(int(ExitCode.CONFIG))
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    worst = ExitCode.SERVER_UNAVAILABLE if ExitCode.SERVER_UNAVAILABLE in codes else max(codes)
    raise SystemExit(worst)


def _doctor(
    ctx: Ctx,
    settings: Settings | None,
    *,
    as_json: bool,
    exit_now: bool = False,
    collect: dict[str, object] | None = None,
    name: str = "",
) -> int:
    """One server's check: printed (or, with ``collect``, its JSON kept under ``name``);
    the exit code. ``exit_now``: fail as a single doctor always has."""
    with open_api(ctx, settings) as api:
        report = api.doctor()
    for line in report.too_open:
        err.print(f"warning: readable by others (patient data): {line}", markup=False)
    as_dict = {**dataclasses.asdict(report), "ok": report.ok}
    if collect is not None and as_json:
        collect[name] = as_dict
    elif as_json:
        click.echo(json.dumps(as_dict, indent=2))
    else:
        _print_doctor(report)
    if not report.reachable:
        line = f"error: cannot use the server: {report.error}"
        if exit_now:
            fail([line], ExitCode.SERVER_UNAVAILABLE)
        err.print(line, markup=False)
        return int(ExitCode.SERVER_UNAVAILABLE)
    return int(ExitCode.OK if report.ok else ExitCode.CONFIG)


def _print_doctor(report: Doctor) -> None:
    out.print(f"server: {report.server_url}", markup=False)
    if not report.reachable:
        return
    out.print(
        f"FHIR version: {report.fhir_version} ({report.software or 'unknown software'})",
        markup=False,
    )
    out.print(f"write strategy: {report.strategy}", markup=False)
    if report.granted_scope is not None:
        out.print(
            f"scopes: asked {report.requested_scope}; granted {report.granted_scope or 'nothing'}",
            markup=False,
        )
        for scope in report.scopes_not_granted:
            err.print(f"warning: scope not granted: {scope}", markup=False)
    if report.sources:
        out.print(sources_line(report.sources), markup=False)
    for t in report.types:
        allowed = " ".join(t.allowed) or "nothing"
        out.print(f"{t.resource_type}: allows {allowed}; {t.strategy}; {t.guarantee}", markup=False)
    if report.alerts:
        out.print(f"alerts: {report.alerts}", markup=False)
    for line in report.degraded:
        out.print(f"degraded: {line}", markup=False)
    for line in report.blockers:
        err.print(f"blocker: {line}", markup=False)
    if not (report.fhir_version or "").startswith("4.0"):
        err.print("blocker: alliance-fhir needs a FHIR R4 (4.0.x) server", markup=False)
    out.print("ok" if report.ok else "not ready", markup=False)


@click.command()
@click.option(
    "--once",
    is_flag=True,
    help=(
        "Run one cycle and exit: 0 if it succeeded, 1 if a file went to failed/ or a record "
        "was rejected or in conflict."
    ),
)
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
def daemon(
    ctx: Ctx,
    once: bool,
    labels_only: bool,
    settle_seconds: float,
    backoff_max: float | None,
    no_metrics: bool,
    no_monitoring: bool,
) -> None:
    """Run unattended: publish, ingest the inbox, push, monitor; every interval. With tenants
    configured and none selected: every tenant, each in its own loop (its own back-off and
    connections), one /metrics for all (label ``tenant``)."""
    from alliance_fhir.daemon import DaemonOptions, run
    from alliance_fhir.daemon.tenants import run_tenants

    names = ctx.every_tenant
    options = DaemonOptions(
        once=once,
        labels_only=labels_only,
        settle_seconds=settle_seconds,
        backoff_max=backoff_max,
        metrics=not no_metrics,
        monitoring=not no_monitoring,
    )
    if names:
        tenants = all_tenant_settings(ctx.root_settings)
        raise SystemExit(run_tenants(ctx.root_settings, tenants, options))
    raise SystemExit(run(ctx.settings, options))
