"""Alliance-monitoring rules (``mappings/rules/*.yaml``): schema, loading and checking.

A rule file is a mapping with one key, ``rules``, holding a list of rules::

    rules:
      - id: srs-below-cutoff
        instrument: srs
        kind: below-cutoff
        severity: medium
        label: Session rating below the cutoff
        message: "SRS total {score} is below the cutoff {cutoff} ({date})"
        params: {}

Every rule names the instrument it watches, one of the :data:`KINDS`, its ``severity``
(``low | medium | high``), a short ``label`` (the display of its code on Flag and Task) and a
``message`` template in ``str.format`` style whose named fields are the numbers of the kind
(:data:`MESSAGE_FIELDS`). ``params`` depend on the kind (:data:`PARAMS`).

Errors name file, line and path, like instrument definitions: a shape error from pydantic
(``rules[2].params.amount``), a template naming an unknown field (``rules[0].message``), and,
when the instruments are given, a rule that does not fit its instrument (an unknown item, no
cutoff to fall back on, ...).
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alliance_fhir.exceptions import ConfigError, InvalidInputError, Problem
from alliance_fhir.inputs import Positions, load_document, problems_from_validation
from alliance_fhir.instruments.schema import CODE, LINK_ID, Instrument, ScoreDef
from alliance_fhir.resources import bundled_mappings

__all__ = [
    "KINDS",
    "MESSAGE_FIELDS",
    "PARAMS",
    "BelowCutoffParams",
    "DecliningTrendParams",
    "DropParams",
    "ItemFloorParams",
    "Kind",
    "MissedCheckinParams",
    "Params",
    "Rule",
    "Severity",
    "check_rule",
    "is_rule_file",
    "load_rules",
    "load_rules_file",
    "resolve_score",
    "rules_from_data",
    "validate_rules_document",
]

Kind: TypeAlias = Literal["below-cutoff", "drop", "declining-trend", "item-floor", "missed-checkin"]
Severity: TypeAlias = Literal["low", "medium", "high"]

#: The kinds of rule, in documentation order.
KINDS: tuple[Kind, ...] = (
    "below-cutoff",
    "drop",
    "declining-trend",
    "item-floor",
    "missed-checkin",
)

#: File suffixes read as rule files.
_SUFFIXES = (".yaml", ".yml", ".json")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class BelowCutoffParams(_Strict):
    """The latest score is below a cutoff: the instrument's unless ``cutoff`` is given."""

    score: str | None = Field(default=None, pattern=CODE, description="subscale id; the total")
    cutoff: float | None = None
    rule: Literal["below", "at-or-below"] | None = None


class DropParams(_Strict):
    """The latest score fell by at least ``amount`` (default: the reliable change).

    ``reference: previous`` compares with the previous scorable check-in; ``baseline`` with
    the mean of the first ``baseline_sessions`` scorable check-ins (1: the first score).
    """

    score: str | None = Field(default=None, pattern=CODE)
    reference: Literal["previous", "baseline"] = "previous"
    baseline_sessions: int = Field(default=1, ge=1, le=12)
    amount: float | None = Field(default=None, gt=0)


class DecliningTrendParams(_Strict):
    """The last ``sessions`` scores fell at every step (``strict``) or never rose, and the
    first of them minus the last is at least ``min_decline`` (default: the reliable change)."""

    score: str | None = Field(default=None, pattern=CODE)
    sessions: int = Field(default=3, ge=2, le=20)
    min_decline: float | None = Field(default=None, gt=0)
    strict: bool = True


class ItemFloorParams(_Strict):
    """The latest answer to ``link_id`` is at the lowest keyed value of its scale."""

    link_id: str = Field(pattern=LINK_ID)


class MissedCheckinParams(_Strict):
    """No check-in for ``days`` days while the care plan is active."""

    days: int = Field(ge=1, le=366)


Params: TypeAlias = (
    BelowCutoffParams | DropParams | DecliningTrendParams | ItemFloorParams | MissedCheckinParams
)

#: The params model of each kind.
PARAMS: dict[Kind, type[Params]] = {
    "below-cutoff": BelowCutoffParams,
    "drop": DropParams,
    "declining-trend": DecliningTrendParams,
    "item-floor": ItemFloorParams,
    "missed-checkin": MissedCheckinParams,
}

_SCORE_FIELDS = ("instrument", "score_name", "score", "date")

#: The named fields a message template of each kind may use (all numbers already rounded).
MESSAGE_FIELDS: dict[Kind, tuple[str, ...]] = {
    "below-cutoff": (*_SCORE_FIELDS, "cutoff"),
    "drop": (*_SCORE_FIELDS, "reference", "compared_with", "drop", "amount"),
    "declining-trend": (*_SCORE_FIELDS, "first", "decline", "min_decline", "sessions"),
    "item-floor": ("instrument", "item", "value", "floor", "date"),
    "missed-checkin": ("instrument", "days_since", "days", "last_checkin"),
}


class _RuleSpec(_Strict):
    id: str = Field(pattern=CODE)
    instrument: str = Field(pattern=CODE)
    kind: Kind
    severity: Severity
    label: str = Field(min_length=1, max_length=80)
    message: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=500)
    params: dict[str, Any] = Field(default_factory=dict)


class _RuleFile(_Strict):
    rules: list[dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """One validated rule. ``params`` is the model of its ``kind`` (see :data:`PARAMS`)."""

    id: str
    instrument: str
    kind: Kind
    severity: Severity
    label: str
    message: str
    params: Params
    description: str | None = None
    source: str | None = None

    def render(self, values: dict[str, Any]) -> str:
        """The message with ``values`` filled in."""
        return self.message.format_map(values)


# -- message templates -------------------------------------------------------------------

_SAMPLE: dict[str, Any] = {
    "instrument": "srs",
    "score_name": "total",
    "score": 30.5,
    "date": "2024-01-31",
    "cutoff": 36,
    "reference": 37.25,
    "compared_with": "the previous check-in",
    "drop": 6.75,
    "amount": 5,
    "first": 38,
    "decline": 7.5,
    "min_decline": 5,
    "sessions": 3,
    "item": "Feeling heard",
    "value": 1,
    "floor": 1,
    "days_since": 30,
    "days": 21,
    "last_checkin": "2024-01-01",
}


def _template_problem(kind: Kind, template: str) -> str | None:
    """Why ``template`` cannot be rendered for ``kind``, or None when it can."""
    allowed = MESSAGE_FIELDS[kind]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"not a valid message template: {exc}"
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            return "use named fields ({score}), not positional ones ({} or {0})"
        if name not in allowed:
            return f"unknown field {{{name}}}; a {kind} rule offers: {', '.join(allowed)}"
        if spec and ("{" in spec):
            return "nested fields in a format spec are not supported"
    try:
        template.format_map({k: _SAMPLE[k] for k in allowed})
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"not a valid message template: {exc}"
    return None


# -- loading -----------------------------------------------------------------------------


def is_rule_file(data: Any) -> bool:
    """Whether parsed mapping data looks like a rule file (predicate for ``register_kind``)."""
    return isinstance(data, dict) and "rules" in data


def _index(instruments: Iterable[Instrument] | None) -> dict[str, Instrument] | None:
    if instruments is None:
        return None
    return {i.id: i for i in instruments}


def rules_from_data(
    data: Any, pos: Positions, instruments: Iterable[Instrument] | None = None
) -> list[Rule]:
    """Validate a parsed rule file; ``pos`` locates errors.

    With ``instruments`` (e.g. an ``InstrumentLibrary``), each rule is also checked against
    its instrument. Raises ``InvalidInputError`` listing every problem found.
    """
    by_id = _index(instruments)
    if not isinstance(data, dict):
        kind = type(data).__name__
        reason = f"a rule file is a mapping with a 'rules' list, not a {kind}"
        raise InvalidInputError(pos.problem((), "", reason))
    try:
        top = _RuleFile.model_validate(data)
    except ValidationError as exc:
        raise InvalidInputError(problems_from_validation(exc, pos)) from None

    problems: list[Problem] = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(top.rules):
        where: tuple[int | str, ...] = ("rules", i)
        try:
            spec = _RuleSpec.model_validate(raw)
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, pos, where))
            continue
        try:
            params = PARAMS[spec.kind].model_validate(spec.params)
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, pos, (*where, "params")))
            continue
        bad_template = _template_problem(spec.kind, spec.message)
        if bad_template:
            problems.append(pos.problem((*where, "message"), "message", bad_template))
            continue
        if spec.id in seen:
            reason = f"rule id {spec.id!r} is used twice in this file"
            problems.append(pos.problem((*where, "id"), "id", reason))
            continue
        seen.add(spec.id)
        rule = Rule(
            id=spec.id,
            instrument=spec.instrument,
            kind=spec.kind,
            severity=spec.severity,
            label=spec.label,
            message=spec.message,
            params=params,
            description=spec.description,
            source=pos.source,
        )
        if by_id is not None:
            instrument = by_id.get(rule.instrument)
            if instrument is None:
                known = ", ".join(sorted(by_id)) or "none"
                reason = f"unknown instrument {rule.instrument!r}; known instruments: {known}"
                problems.append(pos.problem((*where, "instrument"), "instrument", reason))
                continue
            found = check_rule(rule, instrument)
            if found:
                problems.extend(pos.problem((*where, *p), p[-1], r) for p, r in found)
                continue
        rules.append(rule)
    if problems:
        raise InvalidInputError(problems)
    return rules


def load_rules_file(path: Path, instruments: Iterable[Instrument] | None = None) -> list[Rule]:
    """Read and validate one rule file (YAML or JSON); see :func:`rules_from_data`."""
    data, pos = load_document(path)
    return rules_from_data(data, pos, instruments)


def load_rules(instruments: Iterable[Instrument], extra_dirs: Sequence[Path] = ()) -> list[Rule]:
    """The bundled rules, then each extra directory's, a later rule id replacing an earlier.

    An extra directory contributes its ``rules/`` folder when it has one, otherwise the rule
    files directly inside it (other mapping files there are ignored). Two files of the same
    layer defining one rule id is a problem. Rules come back sorted by id.
    """
    library = list(instruments)
    layers: list[tuple[list[Path], bool]] = [(_files(bundled_mappings() / "rules"), True)]
    for extra in extra_dirs:
        if not extra.is_dir():
            raise ConfigError(f"rule directory {extra} does not exist")
        sub = extra / "rules"
        layers.append((_files(sub), True) if sub.is_dir() else (_files(extra), False))
    problems: list[Problem] = []
    out: dict[str, Rule] = {}
    for files, all_rules in layers:
        layer: dict[str, str] = {}
        for path in files:
            try:
                data, pos = load_document(path)
                if not all_rules and not is_rule_file(data):
                    continue
                rules = rules_from_data(data, pos, library)
            except InvalidInputError as exc:
                problems.extend(exc.problems)
                continue
            for i, rule in enumerate(rules):
                if rule.id in layer:
                    reason = f"rule {rule.id!r} is also defined in {layer[rule.id]}"
                    problems.append(pos.problem(("rules", i, "id"), "id", reason))
                    continue
                layer[rule.id] = str(path)
                out[rule.id] = rule
    if problems:
        raise InvalidInputError(problems)
    return [out[k] for k in sorted(out)]


def validate_rules_document(path: Path, data: Any, pos: Positions, context: Any) -> list[Problem]:
    """Problems of one rule file, for ``instruments.library.register_kind``.

    ``context.library`` (the run's instruments) is used to check each rule's instrument.
    """
    library = getattr(context, "library", None)
    try:
        rules_from_data(data, pos, library)
    except InvalidInputError as exc:
        return exc.problems
    return []


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES)


# -- fitting a rule to its instrument ----------------------------------------------------

FieldPath: TypeAlias = tuple[str, ...]


def resolve_score(instrument: Instrument, score_id: str | None) -> ScoreDef:
    """The total (``None`` or the total's id) or the subscale ``score_id``; KeyError if none."""
    total = instrument.scoring.total
    if score_id is None or score_id == total.id:
        return total
    for sub in instrument.scoring.subscales:
        if sub.id == score_id:
            return sub
    raise KeyError(score_id)


def check_rule(rule: Rule, instrument: Instrument) -> list[tuple[FieldPath, str]]:
    """What stops ``rule`` from being evaluated on ``instrument``: (path, reason) pairs."""
    if rule.instrument != instrument.id:
        return [(("instrument",), f"this rule watches {rule.instrument!r}, not {instrument.id!r}")]
    p = rule.params
    out: list[tuple[FieldPath, str]] = []
    if isinstance(p, BelowCutoffParams | DropParams | DecliningTrendParams):
        try:
            score = resolve_score(instrument, p.score)
        except KeyError:
            ids = [instrument.scoring.total.id, *(s.id for s in instrument.scoring.subscales)]
            reason = f"{instrument.id} has no score {p.score!r} (scores: {', '.join(ids)})"
            return [(("params", "score"), reason)]
        is_total = score.id == instrument.scoring.total.id
        if isinstance(p, BelowCutoffParams):
            if p.cutoff is None and (not is_total or instrument.scoring.cutoff is None):
                reason = f"{instrument.id} defines no cutoff for {score.id}; give params.cutoff"
                out.append((("params",), reason))
        else:
            amount = p.amount if isinstance(p, DropParams) else p.min_decline
            name = "amount" if isinstance(p, DropParams) else "min_decline"
            if amount is None and (not is_total or instrument.scoring.reliable_change is None):
                reason = (
                    f"{instrument.id} defines no reliable change for {score.id}; give params.{name}"
                )
                out.append((("params",), reason))
    elif isinstance(p, ItemFloorParams):
        try:
            item = instrument.item(p.link_id)
        except KeyError:
            return [(("params", "link_id"), f"{instrument.id} has no item {p.link_id!r}")]
        if item.type == "text":
            out.append((("params", "link_id"), f"item {p.link_id!r} is free text, not rated"))
    return out
