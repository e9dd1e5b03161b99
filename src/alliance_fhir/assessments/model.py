"""The domain record of one completed (or partly completed) instrument."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from alliance_fhir.exceptions import Problem
from alliance_fhir.instruments.schema import LINK_ID

#: A raw answer as read from a source: the scale point code (choice), a number (decimal),
#: or free text (text). ``check.prepare`` turns source spellings (CSV strings, YAML ints)
#: into the types the scorer takes.
RawAnswer = str | int | float

KEY = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_LINK_ID = re.compile(LINK_ID)  # compiled once: every answer of every record is matched
#: linkIds already matched: records answer the same few dozen items, so each is matched once
#: (bounded: a file of made-up linkIds cannot grow it without end).
_VALID_LINK_IDS: set[str] = set()
_MAX_VALID_LINK_IDS = 4096
_ALL_TEXT = frozenset({str})  # the one answer type of the common case (see _drop_unanswered)


class Identifier(BaseModel):
    """A business identifier: ``system`` (a URI) and ``value`` (an MRN, an NPI, ...)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    system: str = Field(min_length=1, pattern=r"^(https?://|urn:)\S+$")
    value: str = Field(min_length=1, pattern=r"^\S(.*\S)?$")

    def token(self) -> str:
        return f"{self.system}|{self.value}"


class Assessment(BaseModel):
    """One respondent's answers to one instrument at one time.

    ``key`` is the source's record id and becomes the value of our identifier on the
    QuestionnaireResponse and its score Observation, so re-importing never duplicates.
    ``authored`` must carry a timezone: a naive time is ambiguous and is refused.
    ``answers`` maps linkId to the raw answer; an unanswered item is simply absent (a
    ``null`` in a record file counts as absent). ``source`` and ``line`` say where the record
    came from, for messages.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    key: str = Field(pattern=KEY)
    instrument: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    instrument_version: str | None = Field(default=None, pattern=r"^\d+\.\d+(\.\d+)?$")
    patient: Identifier
    practitioner: Identifier | None = None
    authored: AwareDatetime
    status: Literal["completed", "in-progress", "amended"] = "completed"
    session: int | None = Field(default=None, ge=1)
    answers: dict[str, RawAnswer] = Field(default_factory=dict)
    source: str | None = Field(default=None, description="file the record came from")
    line: int | None = Field(default=None, ge=1, description="its line in that file")
    answer_lines: dict[str, int] = Field(
        default_factory=dict, exclude=True, repr=False, description="linkId -> line, if known"
    )

    @field_validator("answers", mode="before")
    @classmethod
    def _drop_unanswered(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        values = value.values()
        if (
            _ALL_TEXT.issuperset(map(type, values))
            and _ALL_TEXT.issuperset(map(type, value))
            and "" not in values
            and not any(map(str.isspace, values))
        ):
            # the common case (every answer text, none blank), decided in C: all kept
            out: dict[str, Any] = dict(value)
        else:
            out = _answered(value)
        if not _VALID_LINK_IDS.issuperset(out):
            bad = sorted(k for k in out if not _LINK_ID.fullmatch(k))
            if bad:
                raise ValueError(f"not a valid linkId: {', '.join(bad)}")
            if len(_VALID_LINK_IDS) > _MAX_VALID_LINK_IDS:
                _VALID_LINK_IDS.clear()
            _VALID_LINK_IDS.update(out)
        return out

    @property
    def where(self) -> str:
        """Where the record came from, for messages: ``file:line``, or the key."""
        if self.source is None:
            return f"assessment {self.key}"
        return self.source if self.line is None else f"{self.source}:{self.line}"

    def problem(self, field: str, reason: str, line: int | None = None) -> Problem:
        """A Problem about this record: its file and line (or its key), the field, the reason."""
        if self.source is None:
            return Problem(f"assessment {self.key}", field, reason)
        return Problem(
            self.source, field, f"assessment {self.key}: {reason}", line=line or self.line
        )

    def authored_fhir(self) -> str:
        """``authored`` as a FHIR dateTime (seconds precision, explicit offset)."""
        return format_datetime(self.authored)


def _answered(value: dict[Any, Any]) -> dict[str, Any]:
    """The answers given (``None`` and blank text dropped); a true/false or a list or
    mapping is refused."""
    out: dict[str, Any] = {}
    for k, v in value.items():
        if type(v) is str and type(k) is str:  # the common case, decided at once
            if v and not v.isspace():  # i.e. v.strip() is not empty
                out[k] = v
            continue
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        if isinstance(v, bool):
            raise ValueError(f"answer to {k}: true/false is not an answer to any item")
        if isinstance(v, dict | list):
            raise ValueError(f"answer to {k}: expected one code, number or text")
        out[str(k)] = v
    return out


def format_datetime(value: datetime) -> str:
    text = value.isoformat(timespec="seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text
