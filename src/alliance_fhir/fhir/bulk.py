"""FHIR Bulk Data export (``$export``): kick-off, status polling, manifest, streamed files.

One :class:`BulkExport` is one job on the server (HL7 FHIR Bulk Data Access IG)::

    with BulkExport(client, ExportRequest(types=("QuestionnaireResponse",), since=...)) as job:
        manifest = job.wait()                  # kick-off + polling
        for resource in job.resources(manifest):
            ...                                # one NDJSON line at a time
    # the job is deleted on the server here, also after an error or Ctrl-C

Rules kept here:

* kick-off is ``GET [base]/$export`` (or ``Patient/$export``) with ``Prefer: respond-async``
  and ``Accept: application/fhir+json``; the answer must be 202 with ``Content-Location``;
* polling honours ``Retry-After`` (seconds or an HTTP date), held between a floor and a cap
  (:class:`PollPolicy`), and gives up after ``timeout_seconds``; ``X-Progress`` is logged
  reduced to numbers and job-status words (it is free text: no PHI reaches a log);
* output files are fetched only from the server's own origin (another host is refused
  naming that host, never the query), with our credentials only when the manifest says
  ``requiresAccessToken``, and streamed: one line in memory at a time;
* a line that is not a JSON resource is a :class:`LineProblem` (file index, line number,
  reason) and the rest of the file goes on; ``error`` files are read as OperationOutcomes
  and reported by severity, code and path (:class:`ExportIssue`), never their text;
* the job is deleted at the end, on failure and on cancel (``DELETE`` on the status URL).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

from alliance_fhir.exceptions import FatalError, FhirError
from alliance_fhir.fhir._errors import parse_retry_after
from alliance_fhir.fhir._requests import TYPE_NAME
from alliance_fhir.fhir._transport import origin
from alliance_fhir.fhir.client import FhirClient
from alliance_fhir.log import get_logger

__all__ = [
    "BulkExport",
    "ExportFile",
    "ExportIssue",
    "ExportRequest",
    "LineProblem",
    "Manifest",
    "PollPolicy",
    "progress_summary",
]

_OPERATION = "$export"
_ASYNC = {"Prefer": "respond-async"}
#: Words of ``X-Progress`` worth logging: job states, never a person's name.
_STATUS_WORDS = frozenset(
    {"QUEUED", "SUBMITTED", "BUILDING", "IN_PROGRESS", "FINALIZE", "COMPLETE", "COMPLETED"}
)
_NUMBERS = re.compile(r"\d+(?:\.\d+)?\s*%|\d+\s*/\s*\d+|\d+\s+of\s+\d+")


def _log() -> Any:
    return get_logger("alliance_fhir.fhir.bulk")


def progress_summary(text: str | None) -> str | None:
    """``X-Progress`` reduced to what is safe to log: percentages, ``n/m`` counts and job
    states (``45%``, ``IN_PROGRESS``); None when nothing of that kind is in it."""
    if not text:
        return None
    kept = [m.group(0).replace(" ", "") for m in _NUMBERS.finditer(text)]
    kept += [w for w in re.findall(r"[A-Z_]{4,}", text) if w in _STATUS_WORDS]
    return " ".join(kept[:4]) or None


@dataclass(frozen=True)
class ExportRequest:
    """What to export: ``types`` (``_type``), ``since`` (``_since``, a FHIR instant),
    ``type_filters`` (``_typeFilter``, e.g. ``QuestionnaireResponse?questionnaire=...``);
    ``patient_level`` kicks off ``Patient/$export`` instead of the system-level one."""

    types: Sequence[str] = ()
    since: str | None = None
    type_filters: Sequence[str] = ()
    patient_level: bool = False

    @property
    def path(self) -> str:
        return f"Patient/{_OPERATION}" if self.patient_level else _OPERATION

    def params(self) -> list[tuple[str, str]]:
        pairs = [("_outputFormat", "application/fhir+ndjson")]
        if self.types:
            pairs.append(("_type", ",".join(self.types)))
        if self.since:
            pairs.append(("_since", self.since))
        pairs.extend(("_typeFilter", f) for f in self.type_filters)
        return pairs


@dataclass(frozen=True)
class PollPolicy:
    """How status polling waits: the server's ``Retry-After`` (``default_seconds`` when it
    sends none) held within ``[floor_seconds, cap_seconds]``; FatalError (and the job
    deleted) once ``timeout_seconds`` have passed since the kick-off."""

    floor_seconds: float = 1.0
    cap_seconds: float = 30.0
    default_seconds: float = 2.0
    timeout_seconds: float = 3600.0

    def delay(self, retry_after: float | None) -> float:
        wanted = self.default_seconds if retry_after is None else retry_after
        return min(self.cap_seconds, max(self.floor_seconds, wanted))


@dataclass(frozen=True)
class ExportFile:
    """One file of the manifest; ``index`` counts from 1 within its list (output or error)."""

    index: int
    type: str
    url: str
    count: int | None = None


@dataclass(frozen=True)
class Manifest:
    """The completed job's manifest (``transactionTime``, ``requiresAccessToken``, files)."""

    transaction_time: str | None
    requires_access_token: bool
    output: tuple[ExportFile, ...]
    error: tuple[ExportFile, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Manifest:
        if not isinstance(data, Mapping) or not isinstance(data.get("output", []), list):
            raise FatalError("the $export manifest is not a JSON object with an output list")
        return cls(
            transaction_time=_text(data.get("transactionTime")),
            requires_access_token=data.get("requiresAccessToken") is not False,
            output=_files(data.get("output"), "output"),
            error=_files(data.get("error"), "error"),
        )

    @property
    def total(self) -> int | None:
        """The resources the manifest announces (None when a file gives no count)."""
        counts = [f.count for f in self.output]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _files(items: Any, kind: str) -> tuple[ExportFile, ...]:
    files = []
    for index, item in enumerate(items or [], start=1):
        if not isinstance(item, Mapping) or not _text(item.get("url")):
            raise FatalError(f"$export manifest: {kind} file {index} has no url")
        resource_type = str(item.get("type") or "")
        count = item.get("count")
        files.append(
            ExportFile(
                index=index,
                type=resource_type if TYPE_NAME.match(resource_type) else "",
                url=str(item["url"]),
                count=count if isinstance(count, int) and count >= 0 else None,
            )
        )
    return tuple(files)


@dataclass(frozen=True)
class LineProblem:
    """A line of an output file that is not a usable resource (the rest went on)."""

    file_index: int
    line: int
    reason: str

    def __str__(self) -> str:
        return f"$export output file {self.file_index}, line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ExportIssue:
    """One issue of an ``error`` file's OperationOutcome: severity, code and paths only."""

    file_index: int
    line: int
    severity: str
    code: str
    expression: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f" at {', '.join(self.expression)}" if self.expression else ""
        return (
            f"$export error file {self.file_index}, line {self.line}: "
            f"{self.severity} {self.code}{where}"
        )


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(resource, None) or (None, reason); the reason never quotes the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 (byte {exc.start + 1})"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            return None, f"not JSON: {exc.msg} (column {exc.colno})"
        return None, "not JSON: nested too deep"
    if not isinstance(data, dict):
        return None, "not a JSON object"
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not TYPE_NAME.match(resource_type):
        return None, "no resourceType"
    return data, None


@dataclass
class BulkExport:
    """One ``$export`` job (see the module docstring); a context manager that deletes the
    job on the server when left, however it is left.

    ``problems`` collects the bad lines met by :meth:`resources`. ``sleep``, ``clock``
    (monotonic) and ``wall`` (epoch seconds, for HTTP-date ``Retry-After``) are injectable
    so tests neither sleep nor race.
    """

    client: FhirClient
    request: ExportRequest
    policy: PollPolicy = field(default_factory=PollPolicy)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    status_url: str | None = None
    problems: list[LineProblem] = field(default_factory=list)
    polls: int = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.delete()

    def start(self) -> str:
        """Kick the job off; the status URL (``Content-Location``)."""
        response = self.client.request(
            "GET", self.request.path, params=self.request.params(), headers=_ASYNC
        )
        location = response.headers.get("content-location")
        if response.status != 202 or not location:
            raise FatalError(
                f"$export kick-off answered {response.status} "
                f"{'without Content-Location' if not location else ''}".rstrip()
                + " (expected 202 with Content-Location)",
                status=response.status,
                method="GET",
                url=self.request.path,
            )
        self._check_origin(location, "status URL")
        self.status_url = location
        _log().info("bulk.kickoff", level="patient" if self.request.patient_level else "system")
        return location

    def wait(self) -> Manifest:
        """Kick off (unless started) and poll until the manifest; FatalError on timeout."""
        status_url = self.status_url or self.start()
        deadline = self.clock() + self.policy.timeout_seconds
        while True:
            response = self.client.request("GET", status_url)
            self.polls += 1
            if response.status == 200:
                manifest = Manifest.from_json(response.body)
                _log().info(
                    "bulk.complete",
                    polls=self.polls,
                    files=len(manifest.output),
                    error_files=len(manifest.error),
                    announced=manifest.total,
                )
                return manifest
            if response.status != 202:
                raise FatalError(
                    f"$export status answered {response.status} (expected 202 or 200)",
                    status=response.status,
                    method="GET",
                    url=httpx.URL(status_url).path,
                )
            headers = response.headers
            retry_after = parse_retry_after(headers.get("retry-after"), now=self.wall())
            delay = self.policy.delay(retry_after)
            _log().info(
                "bulk.progress",
                progress=progress_summary(headers.get("x-progress")),
                retry_after=retry_after,
                delay_s=delay,
            )
            if self.clock() + delay > deadline:
                raise FatalError(
                    f"$export did not finish within {self.policy.timeout_seconds:g} s",
                    method="GET",
                    url=httpx.URL(status_url).path,
                )
            self.sleep(delay)

    def resources(
        self, manifest: Manifest, types: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every resource of the output files (of ``types``, if given), streamed file by
        file, line by line; bad lines go to :attr:`problems`."""
        for file in manifest.output:
            if types is not None and file.type not in types:
                continue
            lines = self._lines(file, manifest.requires_access_token, "output")
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                resource, reason = _parse_line(raw)
                if resource is None:
                    problem = LineProblem(file.index, number, reason or "unreadable")
                    _log().warning(
                        "bulk.bad_line", file=file.index, line=number, reason=problem.reason
                    )
                    self.problems.append(problem)
                    continue
                yield resource

    def issues(self, manifest: Manifest) -> list[ExportIssue]:
        """The issues of the manifest's ``error`` files (OperationOutcomes, one per line)."""
        found: list[ExportIssue] = []
        for file in manifest.error:
            lines = self._lines(file, manifest.requires_access_token, "error")
            for number, raw in enumerate(lines, start=1):
                if not raw.strip():
                    continue
                outcome, reason = _parse_line(raw)
                if outcome is None or outcome.get("resourceType") != "OperationOutcome":
                    found.append(
                        ExportIssue(file.index, number, "error", reason or "not-an-outcome")
                    )
                    continue
                found.extend(_outcome_issues(outcome, file.index, number))
        for issue in found:
            _log().warning(
                "bulk.export_issue",
                file=issue.file_index,
                line=issue.line,
                severity=issue.severity,
                code=issue.code,
            )
        return found

    def delete(self) -> None:
        """Delete the job (and its files) on the server; a failure is logged, not raised,
        so it never hides the error that ended the pull."""
        status_url, self.status_url = self.status_url, None
        if status_url is None:
            return
        try:
            self.client.request("DELETE", status_url)
        except FhirError as exc:
            if exc.status not in (404, 410):
                _log().warning("bulk.delete_failed", status=exc.status, error=type(exc).__name__)
                return
        _log().info("bulk.deleted")

    def _check_origin(self, url: str, what: str) -> httpx.URL:
        try:
            target = self.client.base_url.join(url)
        except httpx.InvalidURL as exc:
            raise FatalError(f"$export {what} is not a valid URL") from exc
        if origin(target) != origin(self.client.base_url):
            raise FatalError(
                f"$export {what} is on another origin ({target.scheme}://{target.host}): "
                "refusing to fetch it",
                method="GET",
                url=target.path,
            )
        return target

    def _lines(self, file: ExportFile, authorize: bool, kind: str) -> Iterator[bytes]:
        target = self._check_origin(file.url, f"{kind} file {file.index}")
        started = time.perf_counter()
        count = 0
        for line in self.client.stream_lines(str(target), authorize=authorize):
            count += 1
            yield line
        _log().debug(
            "bulk.file",
            kind=kind,
            file=file.index,
            type=file.type,
            lines=count,
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )


def _outcome_issues(outcome: Mapping[str, Any], file_index: int, line: int) -> list[ExportIssue]:
    issues = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        paths = issue.get("expression") or issue.get("location") or []
        issues.append(
            ExportIssue(
                file_index,
                line,
                str(issue.get("severity") or "error"),
                str(issue.get("code") or "unknown"),
                tuple(str(p) for p in paths if isinstance(p, str))[:3],
            )
        )
    return issues or [ExportIssue(file_index, line, "error", "unknown")]
