"""The one exception hierarchy of alliance-fhir, grouped by what the caller should do.

::

    AllianceFhirError
    ├── InvalidInputError        fix the input; names file, line or JSON path, field, reason
    │   └── ScoringError         the answers cannot be scored (too many missing items, ...)
    ├── ConfigError              fix the configuration
    │   ├── LicensedWordingRequired  a licensed instrument needs --overlay or --labels-only
    │   ├── DuplicateRecordsError    the server holds a record of ours twice: stop, name them
    │   └── UnknownInstrumentError   no loaded instrument has that id
    ├── UnresolvedPerson         a record names a patient/practitioner the server lacks
    ├── RenderError              Chromium did not produce the report picture
    ├── FhirError                the server said something; carries its OperationOutcome
    │   ├── RetriableError       try again later (429, 502-504, timeouts, resets)
    │   ├── ConflictError        someone else changed it (409, 412): never overwrite blindly
    │   ├── ServerRejectedError  the server refused the content (400, 422)
    │   └── FatalError           stop: auth, forbidden, misuse, unsafe redirect
    └── StateError               the local state store is unusable (locked, corrupt)
        └── AlreadyRunningError  another daemon holds this state store's lock

Third-party errors (httpx, pydantic, yaml) are translated at one place each, so nothing
outside this module needs to know their types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "AllianceFhirError",
    "AlreadyRunningError",
    "ConfigError",
    "ConflictError",
    "DuplicateRecordsError",
    "FatalError",
    "FhirError",
    "InvalidInputError",
    "LicensedWordingRequired",
    "Problem",
    "RenderError",
    "RetriableError",
    "ScoringError",
    "ServerRejectedError",
    "StateError",
    "UnknownInstrumentError",
    "UnresolvedPerson",
    "outcome_summary",
    "redact_outcome",
]


class AllianceFhirError(Exception):
    """Base of every error we raise on purpose."""


@dataclass(frozen=True)
class Problem:
    """One precise complaint about input: where, which field, why.

    ``location`` is a file name; ``line`` (1-based) or ``path`` (``items[3].scale``) narrows it.
    ``__str__`` gives the one-line form the CLI prints.
    """

    location: str
    field: str
    reason: str
    line: int | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = self.location
        if self.line is not None:
            where += f":{self.line}"
        if self.path:
            where += f" at {self.path}"
        field = f" [{self.field}]" if self.field else ""
        return f"{where}{field}: {self.reason}"


class InvalidInputError(AllianceFhirError):
    """One or more problems with input; the batch it came from carries on without it."""

    def __init__(self, problems: Problem | list[Problem]) -> None:
        self.problems = [problems] if isinstance(problems, Problem) else list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


class ScoringError(InvalidInputError):
    """Answers are valid but a score cannot be computed (the reason says which rule)."""


class ConfigError(AllianceFhirError):
    """The configuration is missing something or contradicts itself."""


class LicensedWordingRequired(ConfigError):
    """A licensed instrument's wording is not shipped: supply the licensee's overlay, or ask
    explicitly for a label-only rendering. The message says which and why."""


class DuplicateRecordsError(ConfigError):
    """The server holds one of our records twice: it ignored a conditional create it claims
    to support. Carrying on would multiply them; the message names the copies."""


class UnknownInstrumentError(ConfigError, LookupError):
    """No instrument with the requested id is loaded; the message lists the known ids."""


class StateError(AllianceFhirError):
    """The local state store cannot be used (held by another process, unreadable)."""


class AlreadyRunningError(StateError):
    """Another process holds the state store's daemon lock."""

    def __init__(self, lock_path: Path, owner: int | None) -> None:
        self.lock_path = lock_path
        self.owner = owner
        who = f"pid {owner}" if owner else "another process"
        super().__init__(
            f"another alliance-fhir daemon ({who}) is already running on this state store "
            f"(lock {lock_path}); only one instance may run per state store"
        )


class _PersonKey(Protocol):
    @property
    def resource_type(self) -> str: ...


class UnresolvedPerson(AllianceFhirError):
    """A record names a patient or practitioner the server does not have."""

    def __init__(self, key: _PersonKey) -> None:
        self.key = key
        super().__init__(f"no {key.resource_type} with the given identifier on the server")


class RenderError(AllianceFhirError):
    """Chromium ran but did not produce the screenshot (the message carries its stderr)."""


class FhirError(AllianceFhirError):
    """The FHIR server answered with an error, or could not be reached.

    ``outcome`` is the server's OperationOutcome (a dict) when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        outcome: Mapping[str, Any] | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.outcome = dict(outcome) if outcome is not None else None
        self.method = method
        self.url = url
        # Severity, code and expression only: diagnostics may echo the request's PHI, and
        # this text reaches logs, run summaries and the terminal (``server_text`` has it).
        detail = outcome_summary(self.outcome, redact_text=True)
        text = message if not detail else f"{message}: {detail}"
        super().__init__(text)

    def server_text(self) -> list[str]:
        """The server's own words (diagnostics/details.text), one per issue: PHI-suspect,
        for an interactive terminal on explicit request only, never for logs or files."""
        issues = (self.outcome or {}).get("issue") or []
        texts = [
            issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
            for issue in issues
            if isinstance(issue, Mapping)
        ]
        return [str(t) for t in texts if t]


class RetriableError(FhirError):
    """Temporary: rate limited, overloaded, timed out or reset. ``retry_after`` in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)


class ConflictError(FhirError):
    """The resource changed on the server since we last saw it (409/412)."""


class ServerRejectedError(FhirError):
    """The server refused the content as invalid (400/422); the OperationOutcome says why."""


class FatalError(FhirError):
    """Retrying will not help: authentication, authorization, misuse, or an unsafe request."""


def outcome_summary(
    outcome: Mapping[str, Any] | None, limit: int = 3, *, redact_text: bool = False
) -> str:
    """The first few issues of an OperationOutcome as one line: ``error: text (expression)``.

    ``redact_text`` keeps only severity, code and expression/location: a server's
    ``diagnostics``/``details.text`` may echo the request (MRN, name, birth date), so it never
    goes where it would rest (dead letters, inbox reports).
    """
    if not outcome or outcome.get("resourceType") != "OperationOutcome":
        return ""
    parts: list[str] = []
    rank = {"fatal": 0, "error": 1, "warning": 2, "information": 3}
    issues = sorted(outcome.get("issue") or [], key=lambda i: rank.get(i.get("severity"), 4))
    for issue in issues[:limit]:
        if redact_text:
            text = str(issue.get("code") or "")
        else:
            text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        where = ", ".join(issue.get("expression") or issue.get("location") or [])
        part = f"{issue.get('severity', '?')}: {text}".strip()
        if where:
            part += f" ({where})"
        parts.append(part)
    return "; ".join(parts)


def redact_outcome(outcome: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An OperationOutcome with only what is safe to keep at rest: per issue its severity,
    code, expression and location (and details' codings, which are codes, not text)."""
    if not outcome:
        return None
    if outcome.get("resourceType") != "OperationOutcome":
        return {"resourceType": str(outcome.get("resourceType") or "unknown")}
    issues: list[dict[str, Any]] = []
    for issue in outcome.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        kept: dict[str, Any] = {
            k: issue[k] for k in ("severity", "code", "expression", "location") if k in issue
        }
        details = issue.get("details")
        if isinstance(details, Mapping) and details.get("coding"):
            kept["details"] = {
                "coding": [
                    {k: c[k] for k in ("system", "code") if k in c}
                    for c in details["coding"]
                    if isinstance(c, Mapping)
                ]
            }
        issues.append(kept)
    return {"resourceType": "OperationOutcome", "issue": issues}
