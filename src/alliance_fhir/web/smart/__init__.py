"""The SMART on FHIR clinician view (SMART App Launch v2, a public client with PKCE).

Launched from the patient's chart (``/launch?iss=&launch=``) or standalone
(``/launch/standalone``), it signs the clinician in at the EHR's authorization server and
shows the same report as ``alliance-fhir report`` (one renderer), read live with the
clinician's own token, plus actions on the open alerts. ``routes(settings)`` is what the
``serve`` app mounts:

========================  ======  =============================================
path                      method  what
========================  ======  =============================================
/launch                   GET     EHR launch: allow-listed ``iss``, discovery, authorize
/launch/standalone        GET     standalone launch (``launch/patient`` scope)
/callback                 GET     redirect URI: ``state`` check, code exchange
/clinician                GET     the report of the patient in context (or a picker)
/clinician/patient        POST    the picker's choice (only without launch context)
/clinician/acknowledge    POST    alert Task -> ``accepted`` (If-Match)
/clinician/discussed      POST    alert Task gets a "discussed with client" output
========================  ======  =============================================

The sessions (:mod:`.sessions`) and the OAuth side (:mod:`.oauth`) say how tokens, cookies,
``state`` and PKCE are handled.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from starlette.routing import BaseRoute, Route

from alliance_fhir.config import Settings
from alliance_fhir.web.smart import pages
from alliance_fhir.web.smart.views import SmartViews

__all__ = ["SmartViews", "routes"]


def routes(
    settings: Settings,
    *,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[BaseRoute]:
    """The SMART view's routes, sharing one session store (``transport``/``clock``: tests)."""
    return views_routes(SmartViews(settings, transport=transport, clock=clock))


def views_routes(views: SmartViews) -> list[BaseRoute]:
    """The routes of an existing :class:`SmartViews` (tests keep it to look inside)."""
    return [
        Route("/launch", views.launch, methods=["GET"]),
        Route("/launch/standalone", views.launch_standalone, methods=["GET"]),
        Route("/callback", views.callback, methods=["GET"]),
        Route(pages.VIEW_PATH, views.page, methods=["GET"]),
        Route(pages.PICK_PATH, views.pick, methods=["POST"]),
        Route(pages.ACK_PATH, views.acknowledge, methods=["POST"]),
        Route(pages.DISCUSSED_PATH, views.discussed, methods=["POST"]),
    ]
