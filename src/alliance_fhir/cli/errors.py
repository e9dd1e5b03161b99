"""From an exception to what the user sees: one line per problem and an exit code.

Our own errors (``alliance_fhir.exceptions``) print their message, scrubbed, and exit with
the code of their class (``alliance_fhir.exit_codes``), decided by ``isinstance``. A server's
OperationOutcome shows as severity, code and expression; its own words (diagnostics) may echo
the request's patient data, so they show only with ``--show-server-text`` on a terminal. Anything
else is a bug: one line naming a run id on stderr, exit 70, and the traceback's shape (types,
modules, lines; never message text, which may echo patient data) in the debug log.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click

from alliance_fhir import log as alog
from alliance_fhir.cli.render import err
from alliance_fhir.exceptions import (
    AllianceFhirError,
    AlreadyRunningError,
    ConfigError,
    FatalError,
    FhirError,
    InvalidInputError,
    RetriableError,
)
from alliance_fhir.exit_codes import ExitCode

T = TypeVar("T")

log = alog.get_logger("alliance_fhir.cli")

#: HTTP statuses of a FatalError that mean the server refused our credentials.
AUTH_REFUSED = frozenset({401, 403})


def exit_code_for(exc: AllianceFhirError) -> ExitCode:
    """The exit code of one of our errors (see ``alliance_fhir.exit_codes``)."""
    if isinstance(exc, ConfigError):
        return ExitCode.CONFIG
    if isinstance(exc, AlreadyRunningError):
        return ExitCode.ALREADY_RUNNING
    if isinstance(exc, RetriableError):
        # It escaped the retry policy: the server stayed unreachable or unavailable.
        return ExitCode.SERVER_UNAVAILABLE
    if isinstance(exc, FatalError) and exc.status in AUTH_REFUSED:
        return ExitCode.SERVER_UNAVAILABLE
    return ExitCode.FAILED


def error_lines(exc: AllianceFhirError, *, show_server_text: bool = False) -> list[str]:
    """The lines for one of our errors; the server's text only when ``show_server_text``
    and stderr is a terminal (never into a pipe or file, where it would rest)."""
    if isinstance(exc, InvalidInputError):
        return [f"error: {p}" for p in exc.problems]
    lines = [f"error: {alog.scrub(str(exc))}"]
    said = exc.server_text() if isinstance(exc, FhirError) else []
    if said and show_server_text and err.is_terminal:
        lines += [f"server said: {text}" for text in said]
    elif said:
        lines.append(
            "note: the server's message text is withheld (it may echo patient data); "
            "--show-server-text shows it on a terminal"
        )
    return lines


def fail(lines: list[str], code: ExitCode = ExitCode.FAILED) -> NoReturn:
    """Print ``lines`` on stderr and exit with ``code``."""
    for line in lines:
        err.print(line, markup=False)
    raise SystemExit(code)


def internal_error(exc: Exception) -> ExitCode:
    """Log the shape of an unexpected exception at debug level; one line for the user."""
    run_id = alog.new_id()
    log.debug("cli.internal_error", run_id=run_id, **alog.exception_shape(exc))
    err.print(
        f"alliance-fhir: internal error (run {run_id}); details in the debug log", markup=False
    )
    return ExitCode.INTERNAL


def guarded(call: Callable[[], T], show_server_text: Callable[[], bool] = bool) -> T:
    """Run a command; turn every exception that is not click's own into lines and an exit.

    ``show_server_text`` is asked only on failure (the flag is parsed inside ``call``)."""
    try:
        return call()
    except (click.exceptions.ClickException, click.exceptions.Abort, click.exceptions.Exit):
        raise  # usage errors (exit 2), Ctrl-C, explicit exits: click prints and exits
    except AllianceFhirError as exc:
        fail(error_lines(exc, show_server_text=show_server_text()), exit_code_for(exc))
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # stdout closed by `| head`: click exits quietly
        raise SystemExit(internal_error(exc)) from None
    except Exception as exc:
        raise SystemExit(internal_error(exc)) from None
