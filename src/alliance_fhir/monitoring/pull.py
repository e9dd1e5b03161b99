"""QuestionnaireResponses read back from the server, for monitoring: pure mapping, no I/O.

Responses are read by :mod:`alliance_fhir.adapters.response`, the reader the file importer
uses too; this module adds the server's view (references to its Patients and clinicians,
``ext-<id>`` keys), the pull's search parameters and watermark, and scoring.

The monitor (``app.monitor``) pulls the responses to *our* instruments (their
``questionnaire`` canonical names a loaded instrument's URL) and needs three things from each:

* a :class:`ServerResponse`: which instrument, which patient (the server's ``Patient`` id),
  when, the answers, and whether the response is *ours* (it carries our ``assessment``
  identifier: pushed by sync, so it already has its score Observation) or was completed
  elsewhere (a portal, the EHR's own form);
* a :class:`~alliance_fhir.monitoring.evaluate.CheckIn` for the rules (unscorable, with a
  PHI-free reason, when the answers fail the instrument's checks or cannot be scored);
* for a response completed elsewhere, its score Observation, keyed ``ext-<server id>`` in our
  namespace and ``derivedFrom`` the server's response, so writing it is conditional and
  repeatable.

Reasons name the response (``QuestionnaireResponse/<id>``), the assessment key, linkIds and
the rule broken; never an answer, a name or an identifier value of a person.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from pydantic import ValidationError

from alliance_fhir.adapters.assessment import score_observation
from alliance_fhir.adapters.codesystem import rebase
from alliance_fhir.adapters.response import (
    EXTERNAL_PREFIX,
    Origin,
    external_key,
    instruments_by_url,
    read_questionnaire_response,
)
from alliance_fhir.assessments.check import prepare
from alliance_fhir.assessments.model import Assessment, Identifier, RawAnswer
from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE
from alliance_fhir.exceptions import InvalidInputError
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.instruments.scoring import score
from alliance_fhir.log import register_sensitive
from alliance_fhir.monitoring.evaluate import CheckIn, checkin_from_answers

__all__ = [
    "COUNTED_STATUSES",
    "EXTERNAL_PREFIX",
    "NO_CACHE",
    "SCAN_COUNT",
    "WATERMARK",
    "WITHDRAWN",
    "ScoredResponse",
    "ServerResponse",
    "changed_since",
    "external_key",
    "instruments_by_url",
    "newest_update",
    "patient_id_of",
    "pull_params",
    "questionnaire_urls",
    "read_response",
    "scan_params",
    "score_response",
    "since_for",
]

#: The state-store watermark of the incremental pull.
WATERMARK = "pull:qr"

#: Searches must see the server's current data, not a cached result page.
NO_CACHE = {"Cache-Control": "no-cache"}

#: Response statuses that count as a check-in (an ``in-progress`` form is not done yet).
COUNTED_STATUSES = ("completed", "amended")

#: The status of a response withdrawn after it was completed: its score is withdrawn too.
WITHDRAWN: Final = "entered-in-error"

#: System of the stand-in identifiers that carry server references through ``Assessment``.
_REF_SYSTEM = "urn:alliance-fhir:server-reference"
_SUBJECT = Identifier(system=_REF_SYSTEM, value="subject")
_AUTHOR = Identifier(system=_REF_SYSTEM, value="author")

_LITERAL = re.compile(
    r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$"
)
_CLINICIANS = ("Practitioner", "PractitionerRole")
_STATUS_READ: dict[str, Literal["completed", "amended", "entered-in-error"]] = {
    "completed": "completed",
    "amended": "amended",
    WITHDRAWN: WITHDRAWN,
}


@dataclass(frozen=True)
class ServerResponse:
    """One response to one of our instruments, as the server holds it.

    ``key`` is our assessment key (``ours``) or ``ext-<server id>``. ``subject_ref`` is
    ``{"reference": "Patient/<id>"}``; ``author_ref`` the clinician who authored it, if one
    did. ``answers`` are linkId -> raw answer (scale point code, number or text).
    """

    qr_id: str
    key: str
    ours: bool
    instrument: Instrument
    patient_id: str
    authored: datetime
    status: Literal["completed", "amended", "entered-in-error"]
    answers: Mapping[str, RawAnswer] = field(default_factory=dict)
    version: str | None = None
    author_ref: Mapping[str, Any] | None = None
    last_updated: str | None = None

    @property
    def reference(self) -> str:
        return f"QuestionnaireResponse/{self.qr_id}"

    @property
    def withdrawn(self) -> bool:
        """Entered in error: no check-in any more; its score Observation is withdrawn too."""
        return self.status == WITHDRAWN

    @property
    def subject_ref(self) -> dict[str, Any]:
        return {"reference": f"Patient/{self.patient_id}", "type": "Patient"}


@dataclass(frozen=True)
class ScoredResponse:
    """A response as the rules see it; ``observation`` is its score Observation when asked
    for and scorable; ``reason`` says why it is not scorable."""

    response: ServerResponse
    checkin: CheckIn
    observation: dict[str, Any] | None = None
    reason: str | None = None


# -- query building ----------------------------------------------------------------------


def questionnaire_urls(
    instruments: Iterable[Instrument], canonical_base: str = DEFAULT_CANONICAL_BASE
) -> list[str]:
    """The URLs our Questionnaires are published under (for ``questionnaire=`` searches)."""
    return sorted({rebase(i.url, canonical_base) for i in instruments})


def _instant(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_instant(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def since_for(watermark: str | None, overlap_seconds: float) -> str | None:
    """The ``_lastUpdated`` lower bound of the next pull: the watermark minus the overlap,
    floored to the second (None: pull everything)."""
    if not watermark:
        return None
    when = _parse_instant(watermark)
    if when is None:
        return None
    return _instant(when - timedelta(seconds=overlap_seconds))


def pull_params(
    urls: Iterable[str], since: str | None = None, *, count: int = 100
) -> dict[str, str]:
    """Search parameters of the pull: our Questionnaires, oldest change first."""
    params = {"questionnaire": ",".join(urls), "_sort": "_lastUpdated", "_count": str(count)}
    if since is not None:
        params["_lastUpdated"] = f"ge{since}"
    return params


#: Page size of a full scan: the cap common EHRs put on ``_count`` (a server that caps it
#: lower still sends next links, which the client follows).
SCAN_COUNT: Final = 50


def scan_params(urls: Iterable[str], *, count: int = SCAN_COUNT) -> dict[str, str]:
    """Search parameters of a full scan, for a server that cannot search responses by
    ``_lastUpdated`` or sort them: our Questionnaires only; the watermark is applied on our
    side (``changed_since``)."""
    return {"questionnaire": ",".join(urls), "_count": str(count)}


def changed_since(resources: Iterable[dict[str, Any]], since: str | None) -> list[dict[str, Any]]:
    """What a full scan would have pulled with ``_lastUpdated=ge{since}``: the resources
    whose ``meta.lastUpdated`` is at or after ``since`` (all of them without ``since``; one
    without a readable lastUpdated is kept, as a server-side filter cannot judge it either
    and a second look costs less than a missed check-in), oldest first like ``_sort``."""
    floor = _parse_instant(since) if since else None

    def updated(res: Mapping[str, Any]) -> datetime | None:
        text = (res.get("meta") or {}).get("lastUpdated")
        return _parse_instant(text) if isinstance(text, str) else None

    kept = [r for r in resources if floor is None or (updated(r) or floor) >= floor]
    return sorted(kept, key=lambda r: updated(r) or datetime.min.replace(tzinfo=UTC))


def newest_update(resources: Iterable[Mapping[str, Any]], current: str | None = None) -> str | None:
    """The latest ``meta.lastUpdated`` among ``resources`` (and ``current``), as the server
    wrote it: the next watermark, in the server's clock."""
    best, best_at = current, _parse_instant(current) if current else None
    for res in resources:
        text = (res.get("meta") or {}).get("lastUpdated")
        if not isinstance(text, str):
            continue
        at = _parse_instant(text)
        if at is not None and (best_at is None or at > best_at):
            best, best_at = text, at
    return best


# -- reading one response -----------------------------------------------------------------


def patient_id_of(ref: Any) -> str | None:
    """The server id of the Patient a Reference points at (``Patient/1``, absolute URLs)."""
    if not isinstance(ref, Mapping):
        return None
    match = _LITERAL.search(str(ref.get("reference") or ""))
    if match is None or match.group("type") != "Patient":
        return None
    return match.group("id")


def _clinician_ref(ref: Any) -> dict[str, Any] | None:
    if not isinstance(ref, Mapping):
        return None
    match = _LITERAL.search(str(ref.get("reference") or ""))
    if match is None or match.group("type") not in _CLINICIANS:
        return None
    return {"reference": f"{match.group('type')}/{match.group('id')}", "type": match.group("type")}


class _ServerPeople:
    """People on the server are references to its resources; the Assessment carries
    stand-in identifiers that :func:`_refs` turns back into those references."""

    def patient(self, qr: Mapping[str, Any], origin: Origin) -> Identifier:
        if patient_id_of(qr.get("subject")) is None:
            raise origin.fail("subject", "no reference to a Patient on this server")
        return _SUBJECT

    def practitioner(
        self, qr: Mapping[str, Any], origin: Origin, patient: Identifier | None
    ) -> Identifier | None:
        return _AUTHOR if _clinician_ref(qr.get("author")) is not None else None


def read_response(
    qr: Mapping[str, Any],
    by_url: Mapping[str, Instrument],
    *,
    namespace: str = DEFAULT_NAMESPACE,
    withdrawn: bool = False,
) -> ServerResponse | None:
    """``qr`` as a :class:`ServerResponse`, read by the one response reader.

    None when it is not a check-in to one of our instruments (another questionnaire, or a
    status other than completed/amended; with ``withdrawn``, ``entered-in-error`` is read
    too, so the caller can withdraw its score). InvalidInputError (naming the response, never its
    content, with every problem found) when it is one of ours but cannot be read: no patient
    reference, no usable ``authored``, an answer of an unreadable type. Answers to items the
    instrument does not have are ignored: they cannot change a score.
    """
    qr_id = str(qr.get("id") or "")
    if qr.get("resourceType") != "QuestionnaireResponse" or not qr_id:
        return None
    canonical = qr.get("questionnaire")
    if not isinstance(canonical, str) or canonical.partition("|")[0] not in by_url:
        return None
    status = qr.get("status")
    if status not in COUNTED_STATUSES and not (withdrawn and status == WITHDRAWN):
        return None
    # A withdrawn response is read as the completed one it was (its answers give the score
    # Observation to withdraw); the domain Assessment has no withdrawn status.
    as_read = {**qr, "status": "completed"} if status == WITHDRAWN else qr
    read = read_questionnaire_response(
        as_read, Origin.server(qr_id), by_url, _ServerPeople(), namespace=namespace
    )
    register_sensitive(*read.free_text)
    patient_id = patient_id_of(qr.get("subject"))
    assert patient_id is not None  # _ServerPeople refused the response otherwise
    assessment = read.assessment
    return ServerResponse(
        qr_id=qr_id,
        key=assessment.key,
        ours=read.ours,
        instrument=read.instrument,
        patient_id=patient_id,
        authored=assessment.authored,
        status=_STATUS_READ.get(str(status), "completed"),
        answers=dict(assessment.answers),
        version=read.version,
        author_ref=_clinician_ref(qr.get("author")),
        last_updated=(qr.get("meta") or {}).get("lastUpdated"),
    )


# -- scoring ------------------------------------------------------------------------------


def _assessment(resp: ServerResponse) -> Assessment:
    """The response as a domain Assessment; people are stand-in identifiers that
    :func:`_refs` turns back into the server's references."""
    return Assessment(
        key=resp.key,
        instrument=resp.instrument.id,
        instrument_version=resp.version,
        patient=_SUBJECT,
        practitioner=_AUTHOR if resp.author_ref is not None else None,
        authored=resp.authored,
        status="amended" if resp.status == "amended" else "completed",
        answers=dict(resp.answers),
    )


def _refs(resp: ServerResponse) -> dict[tuple[str, str], Mapping[str, Any]]:
    refs: dict[tuple[str, str], Mapping[str, Any]] = {(_REF_SYSTEM, "subject"): resp.subject_ref}
    if resp.author_ref is not None:
        refs[(_REF_SYSTEM, "author")] = resp.author_ref
    return refs


def _reasons(exc: InvalidInputError, limit: int = 3) -> str:
    parts = [f"{p.field}: {p.reason}" if p.field else p.reason for p in exc.problems[:limit]]
    more = len(exc.problems) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def score_response(
    resp: ServerResponse,
    *,
    observation: bool = False,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    namespace: str = DEFAULT_NAMESPACE,
) -> ScoredResponse:
    """The check-in of ``resp`` (and, with ``observation``, its score Observation).

    Answers that fail the instrument's checks (a required item unanswered, a code off the
    scale, another version of the form) make an unscorable check-in whose reason names the
    linkIds and the rule broken, never an answer.
    """
    instrument = resp.instrument
    try:
        prepared = prepare(instrument, _assessment(resp))
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        reason = f"not a valid {instrument.id} assessment (fields: {', '.join(fields)})"
        checkin = CheckIn(resp.key, resp.authored, None, scorable=False, reason=reason)
        return ScoredResponse(resp, checkin, None, reason)
    except InvalidInputError as exc:
        reason = f"answers fail the {instrument.id} checks ({_reasons(exc)})"
        checkin = CheckIn(resp.key, resp.authored, None, scorable=False, reason=reason)
        return ScoredResponse(resp, checkin, None, reason)
    checkin = checkin_from_answers(instrument, resp.key, resp.authored, prepared.answers)
    if not checkin.scorable:
        return ScoredResponse(resp, checkin, None, checkin.reason or "not scorable")
    if not observation:
        return ScoredResponse(resp, checkin)
    scores = score(instrument, prepared.answers)
    obs = score_observation(
        prepared,
        instrument,
        scores,
        refs=_refs(resp),
        qr_ref=resp.reference,
        canonical_base=canonical_base,
        namespace=namespace,
    )
    if resp.withdrawn:
        obs["status"] = WITHDRAWN
    return ScoredResponse(resp, checkin, obs)
