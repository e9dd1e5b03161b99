"""The one QuestionnaireResponse reader: FHIR JSON -> :class:`Assessment`, for files and server.

Both the file importer (``adapters.response_files``) and the monitor (``monitoring.pull``)
read responses here, so a response means the same wherever it comes from. They differ only
in *who* a response is about (:class:`People`): a file names people by identifier (or by a
reference a resolver turns into one); the server names them by reference to its own
resources. Everything else is one behaviour:

Instrument
    ``questionnaire`` (``url|version``) names a loaded instrument by its URL, as defined or
    rebased under the canonical base (:func:`instruments_by_url`).
Key
    The value of our ``assessment`` identifier. Without one, a file falls back to any
    identifier value, then the resource id, then (a form filler's export has neither) a key
    derived from what the response says: :func:`content_key`. A server response is keyed
    ``ext-<server id>`` (:func:`external_key`): it was completed elsewhere.
``authored``
    A FHIR dateTime with a timezone offset or ``Z`` (seconds may be omitted). A date-only
    value (``2024-03-04``, valid FHIR) is accepted and ordered as 12:00 UTC of that day: it
    stays on that calendar day in every zone from UTC-11 to UTC+11. A time without an offset
    is refused (FHIR requires one when a time is given), as are a year or a year-month alone.
Answers
    Read from every item, groups and items nested under answers included. Calculated score
    items (linkId ``score.*``) are skipped: scores are always recomputed. An answered item
    whose linkId the instrument does not know (an EHR's own extra question) is left out and
    named in :attr:`ReadResponse.ignored_link_ids`, so the caller can say so (the file importer
    reports a note, the monitor ignores it); unanswered items (headers, groups) are not named.
    ``valueCoding`` counts only on a choice item and only when it is one of ours
    (:func:`_coded_answer`, the one place codings are judged): its ``system`` is our
    CodeSystem (under the default or the configured canonical base: the one our
    Questionnaires' answerOptions carry) and its ``code`` a point of the item's scale (bare or
    qualified, as :func:`point_for_code` reads it). A coding *without* a system (FHIR allows
    it) counts only when its code is one of that item's scale points: form fillers that drop
    the system echo the answerOption's code, and nothing else can be meant by a code of the
    item's own answer list. Any other system (SNOMED, LOINC answer lists, ...) is refused:
    instrument definitions declare no equivalences yet, so a foreign code is never read as
    ours (a SNOMED ``1`` is not our ``1``). ``valueDecimal``/``valueInteger`` give a number
    (the instrument's checks judge its range); ``valueString`` free text (returned in
    ``free_text``, for the caller to mask in logs).
Problems
    All at once, each naming the file (line, JSON path) or ``QuestionnaireResponse/<id>``,
    the field and the reason; never an answer value or a person's identifier.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from alliance_fhir.adapters.codesystem import (
    SCORE_LINK_PREFIX,
    codes_system,
    point_for_code,
    rebase,
)
from alliance_fhir.adapters.identity import identifier_system
from alliance_fhir.assessments.model import KEY, Assessment, Identifier, RawAnswer
from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.inputs import Positions, format_path
from alliance_fhir.instruments.schema import Instrument, Item
from alliance_fhir.jsonbytes import compact

__all__ = [
    "CONTENT_PREFIX",
    "EXTERNAL_PREFIX",
    "Origin",
    "People",
    "ReadResponse",
    "Refused",
    "content_key",
    "external_key",
    "instruments_by_url",
    "parse_authored",
    "read_questionnaire_response",
]

#: Key prefix of a response completed elsewhere (``ext-<server id>``).
EXTERNAL_PREFIX = "ext-"

_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(?P<zone>Z|[+-]\d{2}:\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PARTIAL_DATE = re.compile(r"^\d{4}(-\d{2})?$")
_ANSWER_TYPES = "expected valueCoding, valueDecimal, valueInteger or valueString"

JsonPath = tuple[int | str, ...]


@dataclass(frozen=True)
class Origin:
    """Where a response came from: a file (with its JSON positions, for line numbers and the
    resource's JSON path inside the file) or the server (``server_id``)."""

    location: str
    where: JsonPath = ()
    pos: Positions | None = None
    server_id: str | None = None

    @classmethod
    def file(cls, source: str, pos: Positions, where: JsonPath = ()) -> Origin:
        return cls(source, where, pos)

    @classmethod
    def server(cls, qr_id: str) -> Origin:
        return cls(f"QuestionnaireResponse/{qr_id}", server_id=qr_id)

    @property
    def line(self) -> int | None:
        return self.pos.line(self.where) if self.pos is not None else None

    def problem(self, at: Sequence[int | str], field_name: str, reason: str) -> Problem:
        """A Problem about the node at ``at`` (a path inside the resource)."""
        if self.pos is None:
            return Problem(self.location, field_name, reason)
        path = (*self.where, *at)
        return Problem(
            self.location,
            field_name,
            reason,
            line=self.pos.line(path),
            path=format_path(("QuestionnaireResponse", *path)),
        )

    def fail(self, field_name: str, reason: str) -> InvalidInputError:
        """A Problem about a top-level field of the resource, as an exception."""
        return InvalidInputError(self.problem((field_name,), field_name, reason))


class People(Protocol):
    """Who a response is about and who wrote it: the one thing the two paths read apart.

    Each method raises InvalidInputError (from ``origin.fail``) when it cannot tell."""

    def patient(self, qr: Mapping[str, Any], origin: Origin) -> Identifier: ...

    def practitioner(
        self, qr: Mapping[str, Any], origin: Origin, patient: Identifier | None
    ) -> Identifier | None: ...


@dataclass(frozen=True)
class ReadResponse:
    """A response read: the Assessment and what the callers need beside it."""

    assessment: Assessment
    instrument: Instrument
    ours: bool
    server_id: str | None = None
    version: str | None = None
    subject_ref: Mapping[str, Any] | None = None
    author_ref: Mapping[str, Any] | None = None
    free_text: tuple[str, ...] = ()
    ignored_link_ids: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return self.assessment.status


def instruments_by_url(
    instruments: Iterable[Instrument], canonical_base: str = DEFAULT_CANONICAL_BASE
) -> dict[str, Instrument]:
    """Instrument by Questionnaire URL: as defined and as rebased under ``canonical_base``."""
    out: dict[str, Instrument] = {}
    for inst in instruments:
        out[inst.url] = inst
        out[rebase(inst.url, canonical_base)] = inst
    return out


def external_key(qr_id: str) -> str:
    """The assessment key of a response completed elsewhere: ``ext-<server id>`` (a hash of
    the id when that would be too long for a key)."""
    key = f"{EXTERNAL_PREFIX}{qr_id}"
    if re.fullmatch(KEY, key):
        return key
    return f"{EXTERNAL_PREFIX}{hashlib.sha256(qr_id.encode()).hexdigest()[:32]}"


def parse_authored(value: Any) -> datetime | str:
    """``authored`` as an aware datetime, or the reason it is refused (see module doc)."""
    if not isinstance(value, str):
        return "needs a date and time with a timezone offset"
    if _DATE.match(value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            return f"not a FHIR date: {value}"
        return datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    if _PARTIAL_DATE.match(value):
        return "needs at least a full date (YYYY-MM-DD)"
    match = _TIME.match(value)
    if match is None:
        return f"not a FHIR dateTime: {value}"
    if match.group("zone") is None:
        return "needs a timezone offset (e.g. 2024-03-04T17:00:00-05:00)"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return f"not a FHIR dateTime: {value}"


def read_questionnaire_response(
    qr: Any,
    origin: Origin,
    by_url: Mapping[str, Instrument],
    people: People,
    *,
    namespace: str = DEFAULT_NAMESPACE,
) -> ReadResponse:
    """``qr`` as a :class:`ReadResponse`; InvalidInputError with every problem found."""
    if not isinstance(qr, dict) or qr.get("resourceType") != "QuestionnaireResponse":
        raise origin.fail("resourceType", "expected a QuestionnaireResponse")
    canonical = qr.get("questionnaire")
    if not isinstance(canonical, str) or not canonical:
        raise origin.fail("questionnaire", "missing the Questionnaire canonical")
    url, _, version = canonical.partition("|")
    instrument = by_url.get(url)
    if instrument is None:
        raise origin.fail("questionnaire", f"no loaded instrument has url {url}")

    problems: list[Problem] = []
    our_key = _our_key(qr, namespace)
    key: str | None = our_key
    if key is None:
        try:
            key = _fallback_key(qr, origin)
        except InvalidInputError as exc:
            problems.extend(exc.problems)
    patient: Identifier | None = None
    practitioner: Identifier | None = None
    try:
        patient = people.patient(qr, origin)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    try:
        practitioner = people.practitioner(qr, origin, patient)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    authored = parse_authored(qr.get("authored"))
    if isinstance(authored, str):
        problems.append(origin.problem(("authored",), "authored", authored))
    answers = _Answers(origin, instrument, _our_systems(by_url))
    answers.walk(qr.get("item"), ("item",))
    problems.extend(answers.problems)
    if problems or key is None or patient is None or isinstance(authored, str):
        raise InvalidInputError(problems)

    record = {
        "key": key,
        "instrument": instrument.id,
        "instrument_version": version or None,
        "patient": patient.model_dump(),
        "practitioner": practitioner.model_dump() if practitioner else None,
        "authored": authored,
        "status": qr.get("status"),
        "answers": answers.values,
        "source": origin.location if origin.pos is not None else None,
        "line": origin.line,
        "answer_lines": answers.lines,
    }
    try:
        assessment = Assessment.model_validate(record)
    except ValidationError as exc:
        raise InvalidInputError(
            [
                origin.problem(
                    (str(err["loc"][0]) if err["loc"] else "",),
                    ".".join(str(p) for p in err["loc"]),
                    str(err["msg"]).removeprefix("Value error, "),
                )
                for err in exc.errors(include_url=False)
            ]
        ) from exc
    subject, author = qr.get("subject"), qr.get("author")
    return ReadResponse(
        assessment=assessment,
        instrument=instrument,
        ours=our_key is not None,
        server_id=origin.server_id,
        version=version or None,
        subject_ref=subject if isinstance(subject, Mapping) else None,
        author_ref=author if isinstance(author, Mapping) else None,
        free_text=tuple(answers.free_text),
        ignored_link_ids=tuple(answers.ignored),
    )


def _our_systems(by_url: Mapping[str, Instrument]) -> frozenset[str]:
    """Our CodeSystem URL under the default base and under every base ``by_url`` was rebased
    to (:func:`instruments_by_url`), so the reader needs no second setting."""
    systems = {codes_system(DEFAULT_CANONICAL_BASE)}
    for url, inst in by_url.items():
        if url != inst.url and inst.url.startswith(DEFAULT_CANONICAL_BASE + "/"):
            base = url[: len(url) - (len(inst.url) - len(DEFAULT_CANONICAL_BASE))]
            systems.add(codes_system(base))
    return frozenset(systems)


def _our_key(qr: Mapping[str, Any], namespace: str) -> str | None:
    system = identifier_system("assessment", namespace)
    ident = qr.get("identifier")
    for i in ident if isinstance(ident, list) else [ident]:
        if isinstance(i, Mapping) and i.get("system") == system and i.get("value"):
            return str(i["value"])
    return None


def _fallback_key(qr: Mapping[str, Any], origin: Origin) -> str:
    """A key for a response without our identifier (see module doc)."""
    if origin.server_id is not None:
        return external_key(origin.server_id)
    ident = qr.get("identifier")
    for i in ident if isinstance(ident, list) else [ident]:
        if isinstance(i, Mapping) and i.get("value"):
            return str(i["value"])
    if qr.get("id"):
        return str(qr["id"])
    return content_key(qr)


#: Key prefix of a response keyed by its content (:func:`content_key`).
CONTENT_PREFIX = "qr-"


def content_key(qr: Mapping[str, Any]) -> str:
    """A stable key for a response with no identifier and no id (a form filler's export).

    sha256 over the response's canonical JSON without ``id``, ``meta`` and ``text`` (what a
    server or a renderer adds, not what was answered): the same filled form, imported again
    from another file or folder, gets the same key and is never written twice; any different
    answer, subject, author, source or time is a different response. The file's name is left
    out on purpose: inbox files are renamed and moved.
    """
    body = {k: v for k, v in qr.items() if k not in ("id", "meta", "text")}
    canonical = compact(body, sort_keys=True, default=str)
    return f"{CONTENT_PREFIX}{hashlib.sha256(canonical).hexdigest()[:40]}"


@dataclass
class _Answers:
    """linkId -> answer of one response, with the problems of every answer."""

    origin: Origin
    instrument: Instrument
    our_systems: frozenset[str] = frozenset()
    values: dict[str, RawAnswer] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    free_text: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def walk(self, nodes: Any, at: JsonPath) -> None:
        if not isinstance(nodes, list):
            return
        known = {i.link_id: i for i in self.instrument.items}
        for n, node in enumerate(nodes):
            here = (*at, n)
            if not isinstance(node, dict):
                continue
            self.walk(node.get("item"), (*here, "item"))
            given = node.get("answer") or []
            if isinstance(given, list):
                for a, answer in enumerate(given):
                    if isinstance(answer, dict):
                        self.walk(answer.get("item"), (*here, "answer", a, "item"))
            link_id = node.get("linkId")
            if not isinstance(link_id, str) or not given or link_id.startswith(SCORE_LINK_PREFIX):
                continue
            item = known.get(link_id)
            if item is None:
                if link_id not in self.ignored:
                    self.ignored.append(link_id)
                continue
            self._read(here, link_id, item, given)

    def _read(self, here: JsonPath, link_id: str, item: Item, given: Any) -> None:
        field_name = f"answers.{link_id}"
        if not isinstance(given, list):
            self.problems.append(
                self.origin.problem((*here, "answer"), field_name, "answer must be a list")
            )
            return
        if len(given) > 1:
            self.problems.append(
                self.origin.problem((*here, "answer"), field_name, "more than one answer")
            )
            return
        if link_id in self.values:
            self.problems.append(
                self.origin.problem((*here, "linkId"), field_name, "item answered twice")
            )
            return
        answer = given[0] if isinstance(given[0], dict) else {}
        value = _value(self.instrument, item, answer, self.our_systems)
        if isinstance(value, Refused):
            at: JsonPath = (*here, "answer", 0)
            if value.member:
                at = (*at, value.member)
            self.problems.append(self.origin.problem(at, field_name, value.reason))
            return
        if self.origin.pos is not None:
            line = self.origin.pos.line((*self.origin.where, *here, "answer", 0))
            if line is not None:
                self.lines[link_id] = line
        if "valueString" in answer and isinstance(value, str):
            self.free_text.append(value)
        self.values[link_id] = value


@dataclass(frozen=True)
class Refused:
    """Why an answer is not read (``member``: the ``value[x]`` element it is about)."""

    reason: str
    member: str | None = None


def _value(
    instrument: Instrument, item: Item, answer: Mapping[str, Any], our_systems: frozenset[str]
) -> RawAnswer | Refused:
    coding = answer.get("valueCoding")
    if isinstance(coding, Mapping):
        return _coded_answer(instrument, item, coding, our_systems)
    for name in ("valueDecimal", "valueInteger"):
        value = answer.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value
    value = answer.get("valueString")
    return value if isinstance(value, str) else Refused(_ANSWER_TYPES)


def _coded_answer(
    instrument: Instrument, item: Item, coding: Mapping[str, Any], our_systems: frozenset[str]
) -> RawAnswer | Refused:
    """A coded answer, read only when it is ours (see the module doc); else why not."""
    code = coding.get("code")
    if not isinstance(code, str) or not code:
        return Refused("a coding without a code", "valueCoding")
    if not item.scale:
        return Refused(f"a coding answers a {item.type} item", "valueCoding")
    scale = instrument.scale(item.scale)
    system = coding.get("system")
    if system is not None and system not in our_systems:
        return Refused(f"coding from {system}, not the {instrument.id} CodeSystem", "valueCoding")
    point = point_for_code(instrument, scale, code)
    if point is None:
        where = "without a system " if system is None else ""
        return Refused(f"code {where}not on the {scale.id} scale", "valueCoding")
    return point.code
