"""Exit codes of ``alliance-fhir`` and ``python -m alliance_fhir.daemon``: one table, so a
scheduler or an integration job can tell "fix the input" from "fix the config" from "the
server is down" without reading stderr.

====  =========================================================================================
code  meaning
====  =========================================================================================
0     done; every record written or unchanged
1     some records failed (rejected, conflict, unresolved person) or the input has problems
2     configuration or usage error: every ``ConfigError`` (including a licensed instrument
      without ``--overlay``/``--labels-only`` and an unknown instrument id), bad command line
3     another daemon already runs on this state store (``AlreadyRunningError``)
4     the FHIR server could not be used: unreachable or still unavailable when the retry
      deadline ran out (every ``RetriableError``: connection refused, DNS, timeouts, resets,
      429/502/503/504), or it refused our credentials (``FatalError`` with status 401 or 403);
      ``doctor`` when its capability request fails. Other 4xx are misuse or rejection: 1
70    internal error (``EX_SOFTWARE`` of sysexits.h): a bug; details in the debug log
      (``--verbose`` with ``ALLIANCE_FHIR_LOG_LEVEL=DEBUG``)
====  =========================================================================================
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    """What a process exit status means; an ``int``, so ``sys.exit(ExitCode.CONFIG)`` works."""

    OK = 0
    FAILED = 1
    CONFIG = 2
    ALREADY_RUNNING = 3
    SERVER_UNAVAILABLE = 4
    INTERNAL = 70
