"""The schema of an instrument definition (``mappings/instruments/*.yaml``).

Structure, scales and scoring are facts we may ship for any instrument; the wording of a
published instrument is not. ``wording: licensed`` marks such an instrument: its items carry
only our short neutral ``label`` and the official text comes from a licensee overlay.
"""

from __future__ import annotations

import itertools
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LINK_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
CODE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class InstrumentCoding(_Strict):
    """A code an instrument definition declares (the instrument's, its total score's)."""

    system: str
    code: str = Field(pattern=CODE)
    display: str | None = None


class ScalePoint(_Strict):
    """One answer of a choice scale: a code, our label, and the ordinal value that scores it."""

    code: str = Field(pattern=CODE)
    label: str = Field(min_length=1, max_length=80)
    value: int | float


class Scale(_Strict):
    """A named ordered answer scale shared by items (e.g. 1-5 agreement)."""

    id: str = Field(pattern=CODE)
    points: list[ScalePoint] = Field(min_length=2)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        codes = [p.code for p in self.points]
        if len(set(codes)) != len(codes):
            raise ValueError("scale point codes must be unique")
        values = [p.value for p in self.points]
        if len(set(values)) != len(values):
            raise ValueError("scale point values must be unique")
        return self

    @property
    def min_value(self) -> float:
        return min(p.value for p in self.points)

    @property
    def max_value(self) -> float:
        return max(p.value for p in self.points)


class Analogue(_Strict):
    """A visual-analogue line scored as a decimal between ``min`` and ``max``."""

    min: float = 0
    max: float = 10
    decimals: int = Field(default=1, ge=0, le=3)
    low_label: str | None = Field(default=None, max_length=80)
    high_label: str | None = Field(default=None, max_length=80)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max <= self.min:
            raise ValueError("max must be greater than min")
        return self


class Item(_Strict):
    link_id: str = Field(pattern=LINK_ID)
    label: str = Field(min_length=1, max_length=80, description="our short neutral label")
    text: str | None = Field(default=None, description="full wording; only for our own items")
    type: Literal["choice", "decimal", "text"]
    scale: str | None = Field(default=None, description="id of a Scale, for choice items")
    analogue: Analogue | None = None
    reverse: bool = False
    subscale: str | None = Field(default=None, pattern=CODE)
    required: bool = True
    scored: bool = True
    phi: bool = Field(default=False, description="free text that must never be logged")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.type == "choice" and not self.scale:
            raise ValueError("a choice item needs a scale")
        if self.type != "choice" and self.scale:
            raise ValueError("only choice items take a scale")
        if self.type == "decimal" and self.analogue is None:
            raise ValueError("a decimal item needs an analogue (min, max)")
        if self.type == "text":
            if self.scored:
                raise ValueError("a text item cannot be scored (set scored: false)")
            if self.reverse or self.subscale:
                raise ValueError("a text item has no reverse keying or subscale")
        if self.reverse and not self.scored:
            raise ValueError("reverse keying only applies to scored items")
        return self


class Proration(_Strict):
    """How missing answers are handled.

    ``none``: any missing scored item makes the score uncomputable. ``mean``: missing items
    are replaced by the mean of the answered ones of the same score, provided at least
    ``min_answered`` (a count) or ``min_fraction`` of the items were answered.
    """

    method: Literal["none", "mean"] = "none"
    min_answered: int | None = Field(default=None, ge=1)
    min_fraction: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _thresholds(self) -> Self:
        has_threshold = self.min_answered is not None or self.min_fraction is not None
        if self.method == "mean" and not has_threshold:
            raise ValueError("mean proration needs min_answered or min_fraction")
        if self.method == "none" and has_threshold:
            raise ValueError("min_answered/min_fraction only apply to mean proration")
        return self


class ScoreDef(_Strict):
    """The total or one subscale."""

    id: str = Field(pattern=CODE)
    label: str = Field(min_length=1, max_length=80)
    method: Literal["sum", "mean"] = "sum"
    items: list[str] | None = Field(
        default=None, description="linkIds; defaults to every item whose subscale is this id"
    )
    proration: Proration = Proration()
    decimals: int = Field(default=0, ge=0, le=3)


class Band(_Strict):
    """An interpretation band of the total: ``low <= total <= high``."""

    code: str = Field(pattern=CODE)
    label: str = Field(min_length=1, max_length=80)
    low: float
    high: float
    concern: bool = False


class Cutoff(_Strict):
    """The total below (or at/below) which the alliance or outcome needs attention."""

    value: float
    rule: Literal["below", "at-or-below"] = "below"
    meaning: str = Field(min_length=1, max_length=120)


class Scoring(_Strict):
    total: ScoreDef
    subscales: list[ScoreDef] = []
    bands: list[Band] = []
    cutoff: Cutoff | None = None
    reliable_change: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bands_ordered(self) -> Self:
        for band in self.bands:
            if band.high < band.low:
                raise ValueError(f"band {band.code}: high is below low")
        ordered = sorted(self.bands, key=lambda b: b.low)
        for a, b in itertools.pairwise(ordered):
            if b.low <= a.high:
                raise ValueError(f"bands {a.code} and {b.code} overlap")
        ids = [self.total.id, *(s.id for s in self.subscales)]
        if len(set(ids)) != len(ids):
            raise ValueError("score ids must be unique")
        return self


class Instrument(_Strict):
    """One alliance or outcome instrument, as shipped in ``mappings/instruments``."""

    id: str = Field(pattern=CODE)
    url: str = Field(description="canonical URL of the Questionnaire")
    version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    name: str = Field(pattern=r"^[A-Z][A-Za-z0-9_]{0,254}$")
    title: str = Field(min_length=1, max_length=200)
    publisher: str
    description: str | None = None
    licence: str = Field(min_length=1, description="who owns the wording and on what terms")
    wording: Literal["own", "licensed"]
    respondent: Literal["client", "clinician"]
    status: Literal["draft", "active", "retired"] = "active"
    code: InstrumentCoding = Field(description="code of the instrument as a whole")
    score_code: InstrumentCoding = Field(description="Observation.code of the total score")
    scales: list[Scale] = []
    items: list[Item] = Field(min_length=1)
    scoring: Scoring

    @field_validator("url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "urn:")):
            raise ValueError("must be an absolute URL")
        return value

    @model_validator(mode="after")
    def _references(self) -> Self:
        scales = {s.id for s in self.scales}
        link_ids = [i.link_id for i in self.items]
        dupes = sorted({x for x in link_ids if link_ids.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate linkIds: {', '.join(dupes)}")
        for item in self.items:
            if item.scale and item.scale not in scales:
                raise ValueError(f"item {item.link_id}: unknown scale {item.scale!r}")
            if self.wording == "own" and not item.text:
                raise ValueError(f"item {item.link_id}: an own-wording item needs text")
            if self.wording == "licensed" and item.text:
                raise ValueError(
                    f"item {item.link_id}: a licensed instrument ships no wording; "
                    "put the text in a licensee overlay"
                )
        scored = {i.link_id for i in self.items if i.scored}
        for score in (self.scoring.total, *self.scoring.subscales):
            for link_id in score.items or []:
                if link_id not in scored:
                    raise ValueError(f"score {score.id}: {link_id!r} is not a scored item")
        sub_ids = {s.id for s in self.scoring.subscales}
        for item in self.items:
            if item.subscale and item.subscale not in sub_ids:
                raise ValueError(f"item {item.link_id}: unknown subscale {item.subscale!r}")
        for score in (self.scoring.total, *self.scoring.subscales):
            count = len(self.score_items(score))
            if count == 0:
                raise ValueError(f"score {score.id}: has no scored items")
            least = score.proration.min_answered
            if least is not None and least > count:
                raise ValueError(
                    f"score {score.id}: proration min_answered {least} exceeds its {count} items"
                )
        return self

    def item(self, link_id: str) -> Item:
        for item in self.items:
            if item.link_id == link_id:
                return item
        raise KeyError(link_id)

    def scale(self, scale_id: str) -> Scale:
        for scale in self.scales:
            if scale.id == scale_id:
                return scale
        raise KeyError(scale_id)

    def score_items(self, score: ScoreDef) -> list[Item]:
        """The scored items a total or subscale is computed from."""
        if score.items is not None:
            return [self.item(i) for i in score.items]
        if score.id == self.scoring.total.id:
            return [i for i in self.items if i.scored]
        return [i for i in self.items if i.scored and i.subscale == score.id]

    def item_range(self, item: Item) -> tuple[float, float]:
        """Lowest and highest value an answer to ``item`` can score."""
        if item.scale:
            s = self.scale(item.scale)
            return s.min_value, s.max_value
        if item.analogue is not None:
            return item.analogue.min, item.analogue.max
        raise ValueError(f"item {item.link_id} is not scored")


class OverlayItem(_Strict):
    text: str = Field(min_length=1)
    answers: dict[str, str] = Field(default_factory=dict, description="scale code -> wording")


class Overlay(_Strict):
    """A licensee-supplied file giving the official wording of a licensed instrument.

    Kept outside the repository by the licensee; we only define its shape.
    """

    instrument: str = Field(pattern=CODE)
    version: str | None = None
    licence_holder: str = Field(min_length=1)
    copyright: str | None = None
    items: dict[str, OverlayItem]
