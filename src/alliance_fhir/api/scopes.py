"""``doctor``'s scope check: the grant compared with what we asked for and what sync needs.

A token endpoint may grant less than asked (a narrower registration at the EHR) and still
answer 200; sync would then fail with 403 half-way. Reading public ``/metadata`` cannot
tell, so ``doctor`` obtains a token and compares its granted scope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alliance_fhir.fhir import FhirClient
from alliance_fhir.fhir.scopes import missing_scopes, uncovered_needs
from alliance_fhir.sync.references import PERSON_TYPES
from alliance_fhir.sync.strategies import WRITTEN_TYPES

__all__ = ["SYNC_NEEDS", "ScopeCheck", "check_scopes"]

#: What sync does per resource type, as SMART permission letters: our types are searched
#: (by identifier), read, created and updated; people are only looked up.
SYNC_NEEDS: dict[str, str] = dict.fromkeys(WRITTEN_TYPES, "crus") | dict.fromkeys(
    PERSON_TYPES, "rs"
)


@dataclass
class ScopeCheck:
    """``not_granted``: asked for but not granted; ``sync_lacks``: what sync needs and lacks."""

    requested: str
    granted: str
    not_granted: list[str] = field(default_factory=list)
    sync_lacks: list[str] = field(default_factory=list)


def check_scopes(client: FhirClient, requested: str) -> ScopeCheck | None:
    """Compare the scope granted to ``client``'s credentials; None when they carry no scopes
    (basic auth, a static token, no auth)."""
    granted = client.granted_scope()
    if granted is None:
        return None
    return ScopeCheck(
        requested=requested,
        granted=granted,
        not_granted=missing_scopes(requested, granted),
        sync_lacks=uncovered_needs(SYNC_NEEDS, granted),
    )
