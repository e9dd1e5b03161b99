"""The collaborative-goal domain model: a client's plan, its goals and their milestones.

The same pydantic models serve as the schema of plan files (``extra="forbid"``, so a typo is
an error with a line number) and as the in-memory model the FHIR adapter reads and writes.
Fields that a plan file must give but a Goal made by someone else in the EHR may lack
(``proposed_by``, a progress note's date) are optional here and demanded by the file rules in
``_lifecycle.check_plan``.

Party keys (``Plan.patient``, ``Plan.clinicians``, ``Agreement.clinician``) are either an
identifier written ``system|value`` (``http://example-clinic.org/mrn|MRN-1001``) or, for a
party only known by a server reference, that literal reference (``Practitioner/17``).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from alliance_fhir.log import register_sensitive

#: Plan and goal keys: short (room for ``ehr-`` + a 64-character server id), and free of
#: ``/`` (it joins plan and goal keys in our identifiers).
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,71}$"
_KEY_RX = re.compile(KEY_PATTERN)


class Lifecycle(StrEnum):
    """Goal lifecycle (FHIR ``goal-status``)."""

    PROPOSED = "proposed"
    PLANNED = "planned"
    ACCEPTED = "accepted"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    ENTERED_IN_ERROR = "entered-in-error"
    REJECTED = "rejected"


class Achievement(StrEnum):
    """How far the goal has got (FHIR ``goal-achievement``)."""

    IN_PROGRESS = "in-progress"
    IMPROVING = "improving"
    WORSENING = "worsening"
    NO_CHANGE = "no-change"
    ACHIEVED = "achieved"
    SUSTAINING = "sustaining"
    NOT_ACHIEVED = "not-achieved"
    NO_PROGRESS = "no-progress"
    NOT_ATTAINABLE = "not-attainable"


class PlanStatus(StrEnum):
    """CarePlan status (FHIR ``request-status``)."""

    DRAFT = "draft"
    ACTIVE = "active"
    ON_HOLD = "on-hold"
    REVOKED = "revoked"
    COMPLETED = "completed"
    ENTERED_IN_ERROR = "entered-in-error"
    UNKNOWN = "unknown"


class Party(StrEnum):
    """Who proposed a goal."""

    CLIENT = "client"
    CLINICIAN = "clinician"
    BOTH = "both"


class Stance(StrEnum):
    """One party's agreement with a goal (goal-acceptance ``status``)."""

    AGREE = "agree"
    DISAGREE = "disagree"
    PENDING = "pending"


class Priority(StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


#: Lifecycle states in which the work on a goal has not started yet.
NOT_STARTED = frozenset({Lifecycle.PROPOSED, Lifecycle.PLANNED, Lifecycle.ACCEPTED})
#: Lifecycle states in which a goal is closed for good.
CLOSED = frozenset(
    {Lifecycle.COMPLETED, Lifecycle.CANCELLED, Lifecycle.REJECTED, Lifecycle.ENTERED_IN_ERROR}
)
#: Achievement values that only make sense once a goal is over.
FINAL_ACHIEVEMENT = frozenset(
    {Achievement.ACHIEVED, Achievement.NOT_ACHIEVED, Achievement.NOT_ATTAINABLE}
)


def _party_key(value: Any) -> Any:
    """Accept ``{system, value}`` as well as ``"system|value"``."""
    if isinstance(value, dict) and set(value) == {"system", "value"}:
        return f"{value['system']}|{value['value']}"
    return value


def _check_party_key(value: str) -> str:
    if "|" in value:
        system, _, ident = value.partition("|")
        if not system or not ident or "|" in ident:
            raise ValueError("an identifier must be written system|value")
    elif not re.fullmatch(r"[A-Za-z]+/[A-Za-z0-9.-]{1,64}", value):
        raise ValueError("give an identifier system|value or a reference Type/id")
    return value


PartyKey = Annotated[str, BeforeValidator(_party_key), AfterValidator(_check_party_key)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Concept(_Model):
    """A coded concept, or just its text (``code`` and ``system`` are optional)."""

    text: str = Field(min_length=1)
    code: str | None = None
    system: str | None = None


class GoalCoding(_Model):
    """One coding of a goal's description (``Goal.description.coding``)."""

    system: str | None = None
    code: str = Field(min_length=1)
    display: str | None = None


class Target(_Model):
    """A realistic target: what is measured, the level aimed at, and by when.

    Give at most one of ``value`` (a quantity), ``low``/``high`` (a range) or ``detail``
    (words).
    """

    measure: Concept | None = None
    value: Decimal | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    unit: str | None = None
    unit_code: str | None = None
    detail: str | None = None
    due: date | None = None
    #: Read from an EHR's Goal (``detailQuantity.comparator``, ``dueDuration`` as words, e.g.
    #: ``12 wk``) so it is shown as written; our own Goals are not written with them.
    comparator: Literal["<", "<=", ">=", ">"] | None = None
    due_after: str | None = None

    @model_validator(mode="after")
    def _one_kind_of_detail(self) -> Target:
        kinds = [
            name
            for name, given in (
                ("value", self.value is not None),
                ("low/high", self.low is not None or self.high is not None),
                ("detail", self.detail is not None),
            )
            if given
        ]
        if len(kinds) > 1:
            raise ValueError(f"give only one of value, low/high or detail (got {kinds})")
        if kinds and self.measure is None:
            # FHIR R4 invariant gol-1: a target with a detail must say what it measures.
            raise ValueError("a target with a value, range or detail needs a measure")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("low is above high")
        if self.unit_code is not None and self.unit is None:
            raise ValueError("unit_code needs a unit (the words shown to people)")
        return self


class Addressed(_Model):
    """A condition or problem the goal addresses: its words, a server reference, or both."""

    text: str | None = None
    reference: str | None = None

    @model_validator(mode="after")
    def _something(self) -> Addressed:
        if self.text is None and self.reference is None:
            raise ValueError("give text, reference, or both")
        return self


class ProgressNote(_Model):
    """A dated note on how the goal is going."""

    on: date | datetime | None = None
    text: str = Field(min_length=1)

    @field_validator("on")
    @classmethod
    def _aware(cls, value: date | datetime | None) -> date | datetime | None:
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ValueError("a time of day needs a UTC offset (e.g. 2024-03-01T10:00:00+01:00)")
        return value


class GasRating(_Model):
    """A goal-attainment scaling rating: -2 (much less than expected) .. +2 (much more)."""

    on: date
    score: int = Field(ge=-2, le=2)
    note: str | None = None


class Acceptance(_Model):
    """One party's agreement and the priority that party gives the goal.

    ``clinician`` names which clinician (a key from ``Plan.clinicians``); empty means the
    plan's lead clinician. It is filled in when the plan is built.
    """

    status: Stance
    priority: Priority | None = None
    clinician: PartyKey | None = None


class Agreement(_Model):
    client: Acceptance | None = None
    clinician: Acceptance | None = None

    @model_validator(mode="after")
    def _client_is_the_patient(self) -> Agreement:
        if self.client is not None and self.client.clinician is not None:
            raise ValueError("the client's agreement cannot name a clinician")
        return self


class Goal(_Model):
    """A goal in the client's own words; its milestones are goals of their own."""

    key: str = Field(pattern=KEY_PATTERN)
    client_words: str = Field(min_length=1)
    clinician_framing: str | None = None
    coding: list[GoalCoding] = Field(default_factory=list)
    proposed_by: Party | None = None
    lifecycle_status: Lifecycle
    achievement_status: Achievement | None = None
    priority: Priority | None = None
    agreement: Agreement | None = None
    strengths: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    resources: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    start: date | None = None
    status_date: date | None = None
    targets: list[Target] = Field(default_factory=list)
    addresses: list[Addressed] = Field(default_factory=list)
    notes: list[ProgressNote] = Field(default_factory=list)
    gas: list[GasRating] = Field(default_factory=list)
    milestones: list[Goal] = Field(default_factory=list)
    #: Server id when the goal was read from the EHR.
    source_id: str | None = None

    def walk(self) -> list[Goal]:
        """This goal and all its milestones, parents before children."""
        out = [self]
        for milestone in self.milestones:
            out.extend(milestone.walk())
        return out


class PlanHeader(_Model):
    """Everything about a plan except its goals (validated on its own)."""

    key: str = Field(pattern=KEY_PATTERN)
    patient: PartyKey
    clinicians: list[PartyKey] = Field(min_length=1)
    status: PlanStatus
    start: date | None = None
    end: date | None = None
    title: str | None = None
    description: str | None = None
    source_id: str | None = None

    @field_validator("clinicians")
    @classmethod
    def _clinicians(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a clinician is listed twice")
        return value

    @model_validator(mode="after")
    def _period(self) -> PlanHeader:
        if self.start and self.end and self.end < self.start:
            raise ValueError("the plan ends before it starts")
        return self


class Plan(PlanHeader):
    """A client's goal plan: becomes one CarePlan plus a Goal per goal and milestone."""

    goals: list[Goal] = Field(default_factory=list)

    @property
    def lead(self) -> str:
        """The lead clinician (CarePlan.author)."""
        return self.clinicians[0]

    def all_goals(self) -> list[Goal]:
        """Every goal and milestone, parents before children, in file order."""
        return [g for top in self.goals for g in top.walk()]

    def free_text(self) -> list[str]:
        """The people's words in the plan (client's words, framing, strengths, resources,
        what it addresses, notes, target details, title): PHI the log must never show."""
        texts = [self.title, self.description]
        for goal in self.all_goals():
            texts += [goal.client_words, goal.clinician_framing, *goal.strengths]
            texts += [*goal.resources, *(a.text for a in goal.addresses)]
            texts += [n.text for n in goal.notes] + [r.note for r in goal.gas]
            texts += [t.detail for t in goal.targets]
        return [t for t in texts if t]

    @model_validator(mode="after")
    def _register_free_text(self) -> Plan:
        # Every way a plan is read (YAML/JSON, CSV, the server's Goals) builds one here, so
        # this is the one place that cannot be forgotten: the log scrubber masks the plan's
        # free text and the patient's identifier value wherever they appear later.
        ident = split_identifier(self.patient)
        register_sensitive(*self.free_text(), ident[1] if ident else None)
        return self

    @model_validator(mode="after")
    def _fill_clinician(self) -> Plan:
        # An agreement without a named clinician is the lead's: make that explicit so that
        # domain -> FHIR -> domain gives back an equal plan.
        for goal in self.all_goals():
            stance = goal.agreement.clinician if goal.agreement else None
            if stance is not None and stance.clinician is None:
                stance.clinician = self.lead
        return self


def split_identifier(key: str) -> tuple[str, str] | None:
    """``system|value`` -> ``(system, value)``; ``None`` for a literal reference."""
    if "|" not in key:
        return None
    system, _, value = key.partition("|")
    return system, value


def valid_key(key: str) -> bool:
    return bool(_KEY_RX.match(key))
