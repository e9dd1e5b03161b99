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
from alliance_fhir.fhir import Capabilities, FhirClient
from alliance_fhir.sync.engine import Progress, SyncEngine
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.strategies import WritePolicy

__all__ = ["sync_engine", "write_policy"]


def sync_engine(
    settings: Settings,
    client: FhirClient,
    store: StateStore,
    *,
    progress: Progress | None = None,
    capabilities: Capabilities | None = None,
) -> SyncEngine:
    """An engine configured from ``settings``: Goals and CarePlans are merged onto the
    server's version (what the EHR added survives); ``progress`` sees each bundle; the
    write strategy follows the server's ``capabilities`` (today's transactions when None)."""
    options = goal_options(settings)
    policy = write_policy(settings, capabilities or Capabilities.unknown())
    # A conditional create the server ignores is not safe to retry (issue #13).
    client.honours_if_none_exist = policy.trusts_if_none_exist()

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
        policy=policy,
    )


def write_policy(settings: Settings, capabilities: Capabilities) -> WritePolicy:
    """The write strategy for this server, with the configured overrides."""
    return WritePolicy.from_capabilities(
        capabilities,
        write_mode=settings.write_mode,
        conditional_create=settings.conditional_create,
    )
