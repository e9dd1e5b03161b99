"""How the monitor pulls the QuestionnaireResponses changed since its watermark.

Three ways, the first that applies:

* **Bulk Data** ``$export``: the server's CapabilityStatement declares the ``export``
  operation and the pull covers more than ``bulk_threshold`` responses (counted first with
  ``_summary=count``). One job with ``_type=QuestionnaireResponse``, ``_since`` and a
  ``_typeFilter`` for our Questionnaires; files streamed line by line; the job deleted
  afterwards. Bad lines and ``error`` files become problems: the run fails, so its
  watermark does not advance and the next run pulls again.
* **paged search** by ``_lastUpdated``, sorted by the server (today's pull);
* a **full scan** of our Questionnaires' responses, filtered on our side, where the server
  cannot search responses by ``_lastUpdated`` (or refuses it with 400).

Whatever the way, the result is the same list: what ``changed_since`` keeps, oldest first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from alliance_fhir.config import Settings
from alliance_fhir.exceptions import FhirError, ServerRejectedError
from alliance_fhir.fhir import Capabilities, FhirClient
from alliance_fhir.fhir.bulk import BulkExport, ExportRequest, PollPolicy
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.pull import NO_CACHE, changed_since, pull_params, scan_params

__all__ = ["BULK", "FULL_SCAN", "PAGED", "Pulled", "count_changed", "pull_responses"]

log = get_logger("alliance_fhir.monitoring")

_QR = "QuestionnaireResponse"
BULK = "bulk $export"
PAGED = "paged search"
FULL_SCAN = "full scan"


@dataclass
class Pulled:
    """The responses pulled, which way (``via``), why that way (``reason``, PHI-free), and
    the problems of a bulk pull (bad lines, export errors) that make the run fail."""

    resources: list[dict[str, Any]]
    via: str
    reason: str
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The run's one line on how it pulled."""
        return f"pulled via {self.via} ({self.reason})"


def count_changed(
    client: FhirClient, urls: Sequence[str], since: str | None, caps: Capabilities
) -> int | None:
    """How many of our responses changed since ``since`` (``_summary=count``); all of ours
    where the server cannot search by ``_lastUpdated``; None when the server will not say."""
    params = pull_params(urls, since) if caps.searchable(_QR, "_lastUpdated") else scan_params(urls)
    params = {k: v for k, v in params.items() if k not in ("_sort", "_count")}
    params["_summary"] = "count"
    try:
        bundle = client.search_page(_QR, params, headers=NO_CACHE)
    except FhirError as exc:
        log.warning("monitor.count_failed", status=exc.status, error=type(exc).__name__)
        return None
    total = bundle.get("total")
    return total if isinstance(total, int) and total >= 0 else None


def _paged(
    client: FhirClient, urls: Sequence[str], since: str | None, caps: Capabilities | None
) -> tuple[list[dict[str, Any]], str]:
    if caps is None or caps.searchable(_QR, "_lastUpdated"):
        try:
            found = list(client.search(_QR, pull_params(urls, since), headers=NO_CACHE))
        except ServerRejectedError as exc:
            if exc.status != 400:
                raise
            log.warning("monitor.search_refused", status=exc.status)
        else:
            return found, PAGED
    log.info("monitor.full_scan", reason="no _lastUpdated search on QuestionnaireResponse")
    scanned = client.search(_QR, scan_params(urls), headers=NO_CACHE)
    return changed_since(scanned, since), FULL_SCAN


def _bulk(
    client: FhirClient,
    urls: Sequence[str],
    since: str | None,
    settings: Settings,
    sleep: Callable[[float], None],
) -> tuple[list[dict[str, Any]], list[str]]:
    cap = settings.bulk_poll_max_seconds
    policy = PollPolicy(
        floor_seconds=min(1.0, cap),
        cap_seconds=cap,
        default_seconds=min(2.0, cap),
        timeout_seconds=settings.bulk_timeout_seconds,
    )
    request = ExportRequest(
        types=(_QR,),
        since=since,
        type_filters=(f"{_QR}?questionnaire={quote(','.join(urls), safe=',')}",),
    )
    with BulkExport(client, request, policy=policy, sleep=sleep) as job:
        manifest = job.wait()
        resources = changed_since(job.resources(manifest, types=(_QR,)), since)
        issues = job.issues(manifest)
    problems = [str(p) for p in job.problems]
    problems += [str(i) for i in issues if i.severity in ("error", "fatal")]
    return resources, problems


def pull_responses(
    client: FhirClient,
    urls: Sequence[str],
    since: str | None,
    settings: Settings,
    capabilities: Capabilities | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> Pulled:
    """Our responses changed since ``since``, pulled the way the module docstring says;
    one ``monitor.pulled_via`` log event names the way and why."""
    threshold = settings.bulk_threshold
    if capabilities is None or not capabilities.operation("export"):
        resources, via = _paged(client, urls, since, capabilities)
        pulled = Pulled(resources, via, "the server offers no $export")
    else:
        count = count_changed(client, urls, since, capabilities)
        if count is None or count <= threshold:
            resources, via = _paged(client, urls, since, capabilities)
            counted = "uncounted" if count is None else f"{count} to pull"
            pulled = Pulled(resources, via, f"{counted}, bulk_threshold {threshold}")
        else:
            resources, problems = _bulk(client, urls, since, settings, sleep)
            reason = f"{count} to pull, over bulk_threshold {threshold}"
            pulled = Pulled(resources, BULK, reason, problems)
    log.info(
        "monitor.pulled_via",
        via=pulled.via,
        reason=pulled.reason,
        pulled=len(pulled.resources),
        problems=len(pulled.problems),
    )
    return pulled
