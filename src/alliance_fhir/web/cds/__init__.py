"""The CDS Hooks 2.0 service: alliance concerns as cards when the EHR opens a chart.

``routes(settings)`` gives the Starlette routes the serve app mounts (``/cds-services`` and
below). The pieces: :mod:`.auth` (the EHR's JWT), :mod:`.cards` (concern -> card) and
:mod:`.service` (the endpoints); what a patient's concerns are, and where their data comes
from, is :mod:`alliance_fhir.api.cds`. How a clinic registers the service: README, "CDS Hooks".
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from alliance_fhir.api.cds import CdsService
from alliance_fhir.config import Settings
from alliance_fhir.web.cds.auth import JwtVerifier
from alliance_fhir.web.cds.service import PATIENT_VIEW, CdsEndpoints

__all__ = ["PATIENT_VIEW", "CdsEndpoints", "routes"]


def routes(
    settings: Settings,
    *,
    service: CdsService | None = None,
    verifier: JwtVerifier | None = None,
) -> list[BaseRoute]:
    """The CDS Hooks routes for ``settings`` (instruments and rules are loaded here, once).

    ``service`` and ``verifier`` are seams for tests and benchmarks (a pinned clock, a JWKS
    fetcher); by default both are built from ``settings``.
    """
    endpoints = CdsEndpoints(
        settings,
        service or CdsService(settings),
        verifier or JwtVerifier.from_settings(settings),
    )
    return [
        Route("/cds-services", endpoints.discovery, methods=["GET"]),
        Route("/cds-services/{service_id}", endpoints.invoke, methods=["POST"]),
        Route("/cds-services/{service_id}/feedback", endpoints.feedback, methods=["POST"]),
    ]
