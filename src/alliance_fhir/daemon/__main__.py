"""``python -m alliance_fhir.daemon [--config FILE] [--once]``.

With ``[tenants.NAME]`` sections: every tenant (``daemon.tenants``), or the one
``ALLIANCE_FHIR_TENANT`` names.

Exit codes as the CLI's (``alliance_fhir.exit_codes``). An exception nothing else handled is
a bug: one line with a run id on stderr, exit 70, and only the traceback's shape (types,
modules, lines; never message text, which may echo patient data) in the debug log, as
``alliance_fhir.cli.errors`` does for the CLI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from alliance_fhir import log as alog
from alliance_fhir.config import load_settings
from alliance_fhir.daemon.loop import DaemonOptions
from alliance_fhir.daemon.runner import run
from alliance_fhir.daemon.tenants import run_tenants
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.exit_codes import ExitCode
from alliance_fhir.tenants import all_tenant_settings, select_tenant


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m alliance_fhir.daemon",
        description="alliance-fhir background sync daemon (settings: TOML + ALLIANCE_FHIR_*).",
    )
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--once", action="store_true", help="run one cycle and exit")
    parser.add_argument(
        "--labels-only",
        action="store_true",
        help="publish licensed instruments with neutral labels when no overlay exists",
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=2.0,
        help="an inbox file must be unchanged this long before it is taken (default 2)",
    )
    parser.add_argument("--backoff-max", type=float, help="cap of the outage back-off (seconds)")
    parser.add_argument("--no-metrics", action="store_true", help="no /metrics HTTP listener")
    parser.add_argument("--no-monitoring", action="store_true", help="skip the monitoring step")
    return parser.parse_args(argv)


log = alog.get_logger("alliance_fhir.daemon")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # usage errors: argparse prints and exits 2
    alog.configure()  # stderr, INFO, until the settings say otherwise: never stdout
    try:
        return _main(args)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        return internal_error(exc)


def internal_error(exc: Exception) -> ExitCode:
    """Log the shape of an unexpected exception at debug level; one line for the operator."""
    run_id = alog.new_id()
    log.debug("daemon.internal_error", run_id=run_id, **alog.exception_shape(exc))
    print(
        f"alliance-fhir daemon: internal error (run {run_id}); details in the debug log",
        file=sys.stderr,
    )
    return ExitCode.INTERNAL


def _main(args: argparse.Namespace) -> int:
    try:
        root = load_settings(args.config)
        # tenants (alliance_fhir.tenants): ALLIANCE_FHIR_TENANT selects one, else every one
        settings = select_tenant(root)
        tenants = all_tenant_settings(root) if settings is None else {}
    except ConfigError as exc:
        print(f"alliance-fhir daemon: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    alog.configure(level=root.log_level, json=root.log_json)
    options = DaemonOptions(
        once=args.once,
        labels_only=args.labels_only,
        settle_seconds=args.settle_seconds,
        backoff_max=args.backoff_max,
        metrics=not args.no_metrics,
        monitoring=not args.no_monitoring,
    )
    if settings is None:
        return run_tenants(root, tenants, options)
    return run(settings, options)


if __name__ == "__main__":
    sys.exit(main())
