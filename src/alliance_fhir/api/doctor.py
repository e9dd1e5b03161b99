"""``doctor``: what the server allows per resource type, how we will write it, what holds.

Kept apart from ``AllianceFhir`` so the report (and the per-type write switches and alert
degradation it shows, issue #13) reads in one place. Nothing here writes to the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alliance_fhir.app.alert_mode import alert_carrier
from alliance_fhir.app.engine import write_policy
from alliance_fhir.config import Settings
from alliance_fhir.fhir import Capabilities, missing_capabilities
from alliance_fhir.sync.references import PERSON_TYPES
from alliance_fhir.sync.strategies import WRITTEN_TYPES

__all__ = ["Doctor", "TypeSupport", "describe_server"]


@dataclass(frozen=True)
class TypeSupport:
    """One resource type as ``doctor`` reports it: what the server allows, how we write it,
    and what that guarantees."""

    resource_type: str
    allowed: list[str]
    strategy: str
    guarantee: str


@dataclass
class Doctor:
    """``missing`` lists what the statement lacks (informational); ``blockers`` what makes a
    safe sync impossible (sync refuses to start); ``degraded`` what sync leaves out;
    ``alerts`` what carries the monitor's alerts on this server."""

    server_url: str
    reachable: bool
    fhir_version: str | None = None
    software: str | None = None
    missing: list[str] = field(default_factory=list)
    error: str | None = None
    strategy: str | None = None
    types: list[TypeSupport] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    degraded: list[str] = field(default_factory=list)
    #: State, inbox and report files or folders that group or others may read.
    too_open: list[str] = field(default_factory=list)
    alerts: str | None = None
    #: SMART credentials: the scope asked for, the scope granted, what is not granted.
    requested_scope: str | None = None
    granted_scope: str | None = None
    scopes_not_granted: list[str] = field(default_factory=list)
    #: The last fingerprinted run's source files (as ``Status.sources``).
    sources: dict[str, int | float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.reachable and not self.blockers and (self.fhir_version or "").startswith("4.0")


#: What sync does instead when the server takes no writes of an optional type.
_DEGRADED = {
    "CodeSystem": "not written; answer codes are carried in the Questionnaires",
    "Questionnaire": "not written; responses cite the Questionnaire by canonical URL only",
}


def describe_server(
    report: Doctor, statement: Mapping[str, Any], settings: Settings
) -> Capabilities:
    """Fill ``report`` from a reachable server's statement; the capabilities it implies."""
    report.reachable = True
    report.fhir_version = statement.get("fhirVersion")
    software = statement.get("software") or {}
    report.software = (
        " ".join(str(software[k]) for k in ("name", "version") if software.get(k)) or None
    )
    report.missing = missing_capabilities(statement)
    caps = Capabilities.from_statement(statement)
    policy = write_policy(settings, caps)
    report.strategy = policy.mode
    report.blockers = caps.blockers(WRITTEN_TYPES, PERSON_TYPES)
    carrier = alert_carrier(settings.alert_resources, caps)
    report.alerts = carrier.describe()
    for rtype in (*WRITTEN_TYPES, *PERSON_TYPES):
        cap = caps.of(rtype)
        allowed = sorted(cap.interactions) if cap else []
        if rtype in PERSON_TYPES:
            report.types.append(TypeSupport(rtype, allowed, "search", "read only"))
            continue
        if rtype in policy.skip_types:
            report.types.append(TypeSupport(rtype, allowed, "not written", "none"))
            instead = _DEGRADED.get(rtype, f"not written; alerts: {carrier.describe()}")
            report.degraded.append(f"{rtype}: {instead}")
            continue
        how = policy.mode_of(rtype) + (
            " + identifier lookup" if rtype in policy.lookup_types else " + If-None-Exist"
        )
        if rtype in policy.type_modes:
            how += " (write_modes)"
        guarantee = "no duplicates" + (
            ", no silent overwrite (If-Match)"
            if caps.versioned(rtype)
            else ", updates unversioned (no ETag): read and compared with our last write "
            "first, never overwriting a change made before that read; a change racing "
            "between the read and the write can be overwritten"
        )
        if rtype in policy.lookup_types:
            guarantee += "; one writer at a time"
        report.types.append(TypeSupport(rtype, allowed, how, guarantee))
    if carrier.degraded and "Flag" not in policy.skip_types:  # configured so
        report.degraded.append(f"alerts: {carrier.describe()}")
    return caps
