"""Settings of the goals adapter: namespaces, link style, how people are referenced.

Also the constants every direction shares (record kinds, FHIR systems and extension URLs) and
the reference helpers ``References`` needs to recognise a person again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from alliance_fhir.adapters.identity import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE
from alliance_fhir.goals._model import split_identifier

GOAL_ACCEPTANCE = "http://hl7.org/fhir/StructureDefinition/goal-acceptance"
GOAL_RELATIONSHIP = "http://hl7.org/fhir/StructureDefinition/goal-relationship"
RELATIONSHIP_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-relationship-type"
ACHIEVEMENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-achievement"
PRIORITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/goal-priority"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
UCUM = "http://unitsofmeasure.org"

#: Record kinds of a plan (their ``urn:uuid`` scheme is frozen: see ``adapters.record``).
KIND_GOAL = "goal"
KIND_PLAN = "careplan"
KIND_GAS = "gas-rating"
KIND_GAS_SUMMARY = "gas-summary"

#: Measure text used for an EHR target that gives a detail but no measure.
UNSTATED_MEASURE = "Measure not stated"

FRAMING_PREFIX = "Clinician's framing: "

Links = Literal["urn", "conditional"]
Ref = dict[str, Any]


@dataclass(frozen=True)
class References:
    """How to point at the people of a plan, supplied by the sync layer.

    ``patients`` maps a patient key (``system|value``) and ``practitioners`` a clinician key
    to a FHIR Reference dict: ``{"reference": "Patient/123"}`` once resolved on the server,
    or a conditional/logical one. A key missing from the map becomes a logical reference by
    identifier (``{"type": "Patient", "identifier": {...}}``), or ``{"reference": key}`` when
    the key is itself a literal reference (``Practitioner/17``).
    """

    patients: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    practitioners: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def patient(self, key: str) -> Ref:
        return _party_ref(key, self.patients, "Patient")

    def practitioner(self, key: str) -> Ref:
        return _party_ref(key, self.practitioners, "Practitioner")

    def key_of(self, ref: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """``(resource type or None, party key)`` for a Reference; ``(None, None)`` if opaque."""
        for known_type, table in (
            ("Patient", self.patients),
            ("Practitioner", self.practitioners),
        ):
            for key, known in table.items():
                if _same_ref(known, ref):
                    return known_type, key
        ident = ref.get("identifier")
        if isinstance(ident, Mapping) and ident.get("system") and ident.get("value"):
            rtype = ref.get("type")
            return (str(rtype) if rtype else None), f"{ident['system']}|{ident['value']}"
        literal = literal_reference(ref.get("reference"))
        if literal is not None:
            return literal.split("/")[0], literal
        return None, None


@dataclass(frozen=True)
class GoalOptions:
    """Namespaces and the way internal links are written."""

    namespace: str = DEFAULT_NAMESPACE
    canonical_base: str = DEFAULT_CANONICAL_BASE
    links: Links = "urn"
    gas_summary: bool = True

    def ext(self, name: str) -> str:
        return f"{self.canonical_base.rstrip('/')}/StructureDefinition/{name}"

    @property
    def codes(self) -> str:
        return f"{self.canonical_base.rstrip('/')}/CodeSystem/alliance-fhir-codes"


def goal_identifier_value(plan_key: str, goal_key: str) -> str:
    return f"{plan_key}/{goal_key}"


_LITERAL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9.-]{1,64})(?:/_history/[^/]+)?$")


def normal_reference(ref: str) -> str:
    """``http://x/fhir/Goal/7/_history/2`` -> ``Goal/7``; other forms unchanged."""
    if ref.startswith(("urn:", "#")) or "?" in ref:
        return ref
    match = _LITERAL.search(ref)
    return f"{match.group(1)}/{match.group(2)}" if match else ref


def literal_reference(ref: Any) -> str | None:
    if not isinstance(ref, str) or ref.startswith(("urn:", "#")) or "?" in ref:
        return None
    normal = normal_reference(ref)
    return normal if _LITERAL.fullmatch(normal) else None


def _party_ref(key: str, table: Mapping[str, Mapping[str, Any]], rtype: str) -> Ref:
    if key in table:
        return dict(table[key])
    ident = split_identifier(key)
    if ident is None:
        return {"reference": key}
    return {"type": rtype, "identifier": {"system": ident[0], "value": ident[1]}}


def _same_ref(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("reference") is not None or b.get("reference") is not None:
        ra, rb = a.get("reference"), b.get("reference")
        return (
            ra is not None
            and rb is not None
            and normal_reference(str(ra)) == normal_reference(str(rb))
        )
    return a.get("identifier") is not None and a.get("identifier") == b.get("identifier")
