"""Structured logging that cannot leak PHI or secrets.

Two defences, both processors in the structlog chain:

* keys that name PHI or secrets (``name``, ``birth_date``, ``token``, ...) are dropped whole;
* every value that the code registered as sensitive (a patient's identifier, a free-text
  answer, a bearer token) is masked wherever it appears inside any other string value, so a
  server message that echoes an identifier is still clean.

Output is JSON when stderr is not a terminal (daemon, CI), a readable console line otherwise.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
import uuid
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"

#: Keys whose values are PHI or secrets and never reach a log line.
SENSITIVE_KEYS = frozenset(
    {
        "name",
        "given",
        "family",
        "patient_name",
        "birth_date",
        "birthdate",
        "dob",
        "identifier",
        "mrn",
        "npi",
        "ssn",
        "address",
        "phone",
        "email",
        "telecom",
        "text",
        "answer",
        "answers",
        "free_text",
        "comment",
        "note",
        "description",
        "token",
        "access_token",
        "password",
        "secret",
        "client_secret",
        "authorization",
        "private_key",
        "assertion",
        "cookie",
    }
)

#: A credential after "Bearer"/"Basic": 8+ token characters with a digit or symbol, or with
#: an upper-case letter after a lower-case one (base64, random tokens), so the words of our
#: own messages ("auth=bearer needs ALLIANCE_FHIR_TOKEN", "basic authentication") stay
#: readable. Registered credentials are masked whatever their shape.
_BEARER = re.compile(
    r"(?i)\b(bearer|basic)\s+"
    r"(?-i:(?=[A-Za-z]*[0-9._~+/=-]|[A-Za-z]*[a-z][A-Z]))[A-Za-z0-9._~+/=-]{8,}"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


#: What separates words in a log value; a sensitive value without any of these is matched as
#: a whole word through a set lookup, so registering many identifiers stays cheap.
_SEPARATORS = r"\s\"'`,;:=()\[\]{}<>|/?&#*+.!@\\"
_WORD = re.compile(f"[^{_SEPARATORS}]+")
_HAS_SEPARATOR = re.compile(f"[{_SEPARATORS}]")


class _Registry:
    """Values known to be sensitive in this process (thread-safe).

    Single words (identifiers, tokens) live in a set and are found by splitting a log value
    into words; values with spaces or separators (free text, ``system|value``) go into one
    regular expression, rebuilt lazily when one was added since the last use.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words: set[str] = set()
        self._phrases: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._stale = False

    def add(self, values: Iterable[str | None]) -> None:
        fresh = {v for v in values if v and len(v) >= 3}
        with self._lock:
            for value in fresh:
                if _HAS_SEPARATOR.search(value):
                    if value not in self._phrases:
                        self._phrases.add(value)
                        self._stale = True
                else:
                    self._words.add(value)

    def _phrase_pattern(self) -> re.Pattern[str] | None:
        with self._lock:
            if self._stale:
                ordered = sorted(self._phrases, key=len, reverse=True)
                alternatives = "|".join(re.escape(v) for v in ordered)
                # Not inside a longer word or number: "4.5" must not eat part of "14.55".
                self._pattern = re.compile(f"(?<![\\w.])(?:{alternatives})(?![\\w])")
                self._stale = False
            return self._pattern

    def scrub(self, text: str) -> str:
        pattern = self._phrase_pattern()
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
        words = self._words
        if words:
            text = _WORD.sub(lambda m: REDACTED if m.group(0) in words else m.group(0), text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        return _JWT.sub(REDACTED, text)


_registry = _Registry()


def register_sensitive(*values: str | None) -> None:
    """Declare values (identifiers, names, free text, secrets) that must never be logged."""
    _registry.add(values)


def scrub(text: str) -> str:
    """Mask every registered sensitive value and any bearer token or JWT inside ``text``."""
    return _registry.scrub(text)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _registry.scrub(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else _clean(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, BaseException):
        return _registry.scrub(f"{type(value).__name__}: {value}")
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: drop sensitive keys, mask sensitive values everywhere else."""
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            del event_dict[key]
        else:
            event_dict[key] = _clean(event_dict[key])
    return event_dict


def new_id() -> str:
    """A short random id for a run or a request, to tie log lines together."""
    return uuid.uuid4().hex[:12]


def exception_shape(exc: BaseException) -> dict[str, Any]:
    """The shape of an unexpected exception for the debug log: its type, the types that led to
    it and ``module:line in function`` per frame. Never message text or locals, which may echo
    patient data. Shared by the CLI's and the daemon's last-resort handlers."""
    return {
        "error_type": _qualname(exc),
        "caused_by": _chain(exc),
        "frames": [
            f"{frame.f_globals.get('__name__', '?')}:{lineno} in {frame.f_code.co_name}"
            for frame, lineno in traceback.walk_tb(exc.__traceback__)
        ],
    }


def _qualname(exc: BaseException) -> str:
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


def _chain(exc: BaseException) -> list[str]:
    """The types of the exceptions that led to ``exc`` (its causes and contexts)."""
    seen = {id(exc)}
    kinds: list[str] = []
    current = exc.__cause__ or exc.__context__
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kinds.append(_qualname(current))
        current = current.__cause__ or current.__context__
    return kinds


def configure(
    *, level: str = "INFO", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Set up structlog once for the process; safe to call again (tests, CLI re-entry)."""
    out = stream if stream is not None else sys.stderr
    # httpx and httpcore log full URLs (query strings carry identifiers) at INFO/DEBUG on the
    # stdlib loggers; an embedding job's logging set-up must not surface them.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    as_json = json if json is not None else not out.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )


class _LazyLogger:
    """Resolves the structlog configuration at each call, so a module-level logger follows
    any later ``configure`` (CLI start-up, tests capturing output)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        return getattr(structlog.get_logger().bind(logger=self._name), method)


def get_logger(name: str) -> Any:
    """A structlog logger carrying ``logger=name``, safe to create at import time."""
    return _LazyLogger(name)
