"""The one SyncEngine set-up: settings + client + state store -> an engine.

``AllianceFhir.engine()`` (push, publish, sync) and the monitor (score Observations of
responses completed elsewhere) build their engine here, so both use the same bundle size,
concurrency, conflict policy and three-way merge of Goals and CarePlans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alliance_fhir.adapters.goals import KIND_GOAL, KIND_PLAN, lay_fields, owned_fields, set_keys
from alliance_fhir.app.records import goal_options
from alliance_fhir.config import Settings
from alliance_fhir.fhir import FhirClient
from alliance_fhir.sync.engine import MergeRules, Progress, SyncEngine
from alliance_fhir.sync.state import StateStore

__all__ = ["sync_engine"]


def sync_engine(
    settings: Settings,
    client: FhirClient,
    store: StateStore,
    *,
    progress: Progress | None = None,
) -> SyncEngine:
    """An engine configured from ``settings``: Goals and CarePlans are merged three ways
    with the server's version (what the EHR changed or added survives); ``progress`` sees
    each bundle."""
    options = goal_options(settings)

    def owned(resource: Mapping[str, Any]) -> dict[str, Any]:
        return owned_fields(resource, options)

    def lay(
        server: Mapping[str, Any], ours: Mapping[str, Any], fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        return lay_fields(server, ours, fields, options)

    def rules(resource_type: str) -> MergeRules:
        return MergeRules(owned=owned, lay=lay, sets=set_keys(resource_type, options))

    return SyncEngine(
        client,
        store,
        bundle_size=settings.bundle_size,
        concurrency=settings.concurrency,
        conflict_policy=settings.conflict_policy,
        mergers={KIND_GOAL: rules("Goal"), KIND_PLAN: rules("CarePlan")},
        progress=progress,
    )
