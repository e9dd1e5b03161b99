"""The one SyncEngine set-up: settings + client + state store -> an engine.

``AllianceFhir.engine()`` (push, publish, sync) and the monitor (score Observations of
responses completed elsewhere) build their engine here, so both use the same bundle size,
concurrency, conflict policy and three-way merge of Goals and CarePlans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from alliance_fhir.adapters.goals import KIND_GOAL, KIND_PLAN, lay_fields, owned_fields, set_keys
from alliance_fhir.app.records import goal_options
from alliance_fhir.config import Settings
from alliance_fhir.fhir import Capabilities, FhirClient
from alliance_fhir.sync.engine import MergeRules, Progress, SyncEngine
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.strategies import WritePolicy

__all__ = ["sync_engine", "write_policy"]


def sync_engine(
    settings: Settings,
    client: FhirClient,
    store: StateStore,
    *,
    progress: Progress | None = None,
    capabilities: Capabilities | Callable[[], Capabilities] | None = None,
) -> SyncEngine:
    """An engine configured from ``settings``: Goals and CarePlans are merged three ways
    with the server's version (what the EHR changed or added survives); ``progress`` sees
    each bundle; the write strategy follows the server's ``capabilities`` (today's
    transactions when None). A callable is asked only once the run has something to write."""
    options = goal_options(settings)

    def policy() -> WritePolicy:
        caps = capabilities() if callable(capabilities) else capabilities
        chosen = write_policy(settings, caps or Capabilities.unknown())
        # A conditional create the server ignores is not safe to retry (issue #13).
        client.honours_if_none_exist = chosen.trusts_if_none_exist()
        return chosen

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
        policy=policy if callable(capabilities) else policy(),
    )


def write_policy(settings: Settings, capabilities: Capabilities) -> WritePolicy:
    """The write strategy for this server, with the configured overrides."""
    return WritePolicy.from_capabilities(
        capabilities,
        write_mode=settings.write_mode,
        conditional_create=settings.conditional_create,
        write_modes=settings.write_modes,
    )
