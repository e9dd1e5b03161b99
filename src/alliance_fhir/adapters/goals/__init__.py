"""Goal plans <-> FHIR R4 ``Goal`` + ``CarePlan`` + goal-attainment ``Observation``.

Domain -> FHIR: ``plan_to_fhir`` gives the plan's ``Desired`` records (one bundle group per
plan; references between them are ``urn:uuid:`` or conditional, see ``to_fhir``). FHIR ->
domain: ``plan_from_fhir`` and ``goal_from_fhir`` read our resources back to an equal plan
and tolerate Goals written by others. ``merge_onto_server`` lays the fields we own onto the
server's current version and keeps everything else.

Where the domain lives in FHIR:

====================  ==========================================================
client_words          Goal.description.text (``coding`` -> description.coding)
clinician_framing     Goal.note marked with our ``goal-note-kind`` extension
                      (``clinician-framing``), text prefixed "Clinician's framing: "
progress notes        Goal.note marked ``progress``, ``time`` = the note's date
proposed_by           Goal.expressedBy (client/both -> Patient, clinician -> lead
                      Practitioner) + our ``goal-proposed-by`` extension (code)
agreement             one ``goal-acceptance`` extension per party
priority              Goal.priority (goal-priority: the agreed priority)
strengths/resources   our ``goal-strength`` / ``goal-resource`` extensions (valueString)
milestones            own Goals, linked from the parent by ``goal-relationship``
                      (type ``milestone``)
GAS ratings           Observations (code ``gas-rating``), Goal.outcomeReference
====================  ==========================================================

Modules: ``options`` (settings, kinds, systems), ``to_fhir``, ``from_fhir``, ``merge``.
"""

from __future__ import annotations

from alliance_fhir.adapters.goals.from_fhir import goal_from_fhir, plan_from_fhir
from alliance_fhir.adapters.goals.merge import (
    OWNED,
    lay_fields,
    merge_onto_server,
    owned_fields,
    set_keys,
)
from alliance_fhir.adapters.goals.options import (
    ACHIEVEMENT_SYSTEM,
    FRAMING_PREFIX,
    GOAL_ACCEPTANCE,
    GOAL_RELATIONSHIP,
    KIND_GAS,
    KIND_GAS_SUMMARY,
    KIND_GOAL,
    KIND_PLAN,
    OBSERVATION_CATEGORY_SYSTEM,
    PRIORITY_SYSTEM,
    RELATIONSHIP_TYPE_SYSTEM,
    UCUM,
    UNSTATED_MEASURE,
    GoalOptions,
    Links,
    References,
    goal_identifier_value,
)
from alliance_fhir.adapters.goals.to_fhir import goal_entries, plan_to_fhir

__all__ = [
    "ACHIEVEMENT_SYSTEM",
    "FRAMING_PREFIX",
    "GOAL_ACCEPTANCE",
    "GOAL_RELATIONSHIP",
    "KIND_GAS",
    "KIND_GAS_SUMMARY",
    "KIND_GOAL",
    "KIND_PLAN",
    "OBSERVATION_CATEGORY_SYSTEM",
    "OWNED",
    "PRIORITY_SYSTEM",
    "RELATIONSHIP_TYPE_SYSTEM",
    "UCUM",
    "UNSTATED_MEASURE",
    "GoalOptions",
    "Links",
    "References",
    "goal_entries",
    "goal_from_fhir",
    "goal_identifier_value",
    "lay_fields",
    "merge_onto_server",
    "owned_fields",
    "plan_from_fhir",
    "plan_to_fhir",
    "set_keys",
]
