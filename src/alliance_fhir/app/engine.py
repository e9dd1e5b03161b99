"""The one SyncEngine set-up: settings + client + state store -> an engine.

``AllianceFhir.engine()`` (push, publish, sync) and the monitor (score Observations of
responses completed elsewhere) build their engine here, so both use the same bundle size,
concurrency, conflict policy and three-way merge of Goals and CarePlans.
"""

from __future__ import annotations

from typing import Any

from alliance_fhir.adapters.goals import KIND_GOAL, KIND_PLAN, merge_onto_server
from alliance_fhir.app.records import goal_options
from alliance_fhir.config import Settings
from alliance_fhir.fhir import FhirClient
from alliance_fhir.sync.engine import Progress, SyncEngine
from alliance_fhir.sync.state import StateStore

__all__ = ["sync_engine"]


def sync_engine(
    settings: Settings,
    client: FhirClient,
    store: StateStore,
    *,
    progress: Progress | None = None,
) -> SyncEngine:
    """An engine configured from ``settings``: Goals and CarePlans are merged onto the
    server's version (what the EHR added survives); ``progress`` sees each bundle."""
    options = goal_options(settings)

    def merge(server: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
        return merge_onto_server(server, ours, options)

    return SyncEngine(
        client,
        store,
        bundle_size=settings.bundle_size,
        concurrency=settings.concurrency,
        conflict_policy=settings.conflict_policy,
        mergers={KIND_GOAL: merge, KIND_PLAN: merge},
        progress=progress,
    )
