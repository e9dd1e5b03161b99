"""The CDS Hooks HTTP endpoints: discovery, the ``patient-view`` service and its feedback.

=====================================================  ======================================
``GET  /cds-services``                                 discovery: the service and its prefetch
``POST /cds-services/alliance-patient-view``           cards for the patient whose chart opens
``POST /cds-services/alliance-patient-view/feedback``  accepted/overridden counts per rule
=====================================================  ======================================

Statuses: 401 when the EHR's JWT is refused (:mod:`.auth`; discovery lists no patient data
and is open), 400 for a request that is not a ``patient-view`` call, 404 for another service
id, 412 when the data is neither prefetched nor fetchable (CDS Hooks' "precondition
failed"), 200 with ``{"cards": [...]}`` otherwise (an empty list when nothing is wrong).
Log lines name the service, the outcome, counts and timings: never the patient, the token or
a card's text.
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from alliance_fhir.api.cds import CdsDataUnavailable, CdsService, PatientData, is_fhir_id
from alliance_fhir.api.cds_feedback import CDS_COUNTERS, OUTCOMES, CdsCounters
from alliance_fhir.config import Settings
from alliance_fhir.log import get_logger
from alliance_fhir.web.cds.auth import JwtRefused, JwtVerifier
from alliance_fhir.web.cds.cards import IssuedCards, card

__all__ = ["MAX_BODY", "PATIENT_VIEW", "CdsEndpoints"]

log = get_logger("alliance_fhir.cds")

PATIENT_VIEW: Final = "alliance-patient-view"
#: The largest request body read (a prefetch of a few hundred resources is far smaller).
MAX_BODY: Final = 8 * 1024 * 1024


class _BadRequest(Exception):
    pass


def _error(status: int, error: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error}, status_code=status, headers=headers or None)


async def _json_body(request: Request) -> dict[str, Any]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise _BadRequest("request body too large")
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise _BadRequest("request body is not JSON") from exc
    if not isinstance(parsed, dict):
        raise _BadRequest("request body is not a JSON object")
    return parsed


class CdsEndpoints:
    """The three endpoints over one :class:`CdsService` and one :class:`JwtVerifier`."""

    def __init__(
        self,
        settings: Settings,
        service: CdsService,
        verifier: JwtVerifier,
        counters: CdsCounters = CDS_COUNTERS,
    ) -> None:
        self.settings = settings
        self.service = service
        self.verifier = verifier
        self.counters = counters
        self.issued = IssuedCards()
        public = (settings.cds_public_url or "").rstrip("/")
        self._public = public or None
        self._launch = f"{public}/launch"

    def _url(self, *parts: str) -> str:
        return "/".join([str(self._public), "cds-services", *parts])

    def _authorize(self, request: Request, *audience: str) -> dict[str, Any]:
        if self._public is None:
            log.warning("cds.not_configured", missing="cds_public_url")
            raise JwtRefused("the service has no cds_public_url to check aud against")
        return self.verifier.verify(request.headers.get("authorization"), list(audience))

    # -- discovery -----------------------------------------------------------------------

    async def discovery(self, request: Request) -> Response:
        return JSONResponse(
            {
                "services": [
                    {
                        "hook": "patient-view",
                        "id": PATIENT_VIEW,
                        "title": "Therapeutic alliance concerns",
                        "description": (
                            "One card per open therapeutic-alliance concern (a low or falling "
                            "client rating of the relationship, a rupture, an overdue "
                            "check-in), with a link to the clinician's alliance view."
                        ),
                        "prefetch": self.service.prefetch(),
                        "usageRequirements": (
                            "Read access to the patient's Observation, Flag and Task resources "
                            "(prefetch or fhirAuthorization); SMART launch of /launch."
                        ),
                    }
                ]
            }
        )

    # -- the service ---------------------------------------------------------------------

    async def invoke(self, request: Request) -> Response:
        service_id = request.path_params["service_id"]
        if service_id != PATIENT_VIEW:
            return _error(404, "no such service")
        started = time.perf_counter()
        try:
            claims = self._authorize(request, self._url(PATIENT_VIEW))
        except JwtRefused as exc:
            log.warning("cds.refused", service=service_id, reason=exc.reason)
            return _error(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        try:
            body = await _json_body(request)
            patient_id, hook_instance = self._check_call(body)
        except _BadRequest as exc:
            log.warning("cds.bad_request", service=service_id, reason=str(exc))
            return _error(400, str(exc))
        data = self.service.read_prefetch(patient_id, body.get("prefetch"))
        try:
            data = await run_in_threadpool(self._complete, data, body, str(claims["iss"]))
            concerns = await run_in_threadpool(self.service.concerns, data)
        except CdsDataUnavailable as exc:
            log.warning("cds.precondition_failed", service=service_id, reason=str(exc))
            return _error(412, str(exc))
        cards = []
        for concern in concerns:
            made = card(concern, hook_instance=hook_instance, launch_url=self._launch)
            self.issued.add(made["uuid"], concern.rule_id)
            self.counters.card_shown(service_id, concern.rule_id)
            cards.append(made)
        log.info(
            "cds.cards",
            service=service_id,
            cards=len(cards),
            fetched=",".join(data.fetched) or "none",
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return JSONResponse({"cards": cards})

    @staticmethod
    def _check_call(body: dict[str, Any]) -> tuple[str, str]:
        if body.get("hook") != "patient-view":
            raise _BadRequest("this service answers the patient-view hook")
        hook_instance = body.get("hookInstance")
        if not isinstance(hook_instance, str) or not hook_instance:
            raise _BadRequest("hookInstance is required")
        context = body.get("context")
        patient_id = context.get("patientId") if isinstance(context, dict) else None
        if not is_fhir_id(patient_id):
            raise _BadRequest("context.patientId must be a FHIR id")
        assert isinstance(patient_id, str)
        return patient_id, hook_instance

    def _complete(self, data: PatientData, body: dict[str, Any], iss: str) -> PatientData:
        """``data`` with what was not prefetched fetched from the EHR's ``fhirServer``. The
        Patient alone missing is no reason to call the EHR back: no card depends on it."""
        if not [key for key in data.missing if key != "patient"]:
            return data
        server = body.get("fhirServer")
        auth = body.get("fhirAuthorization")
        token = auth.get("access_token") if isinstance(auth, dict) else None
        token_type = str(auth.get("token_type") or "") if isinstance(auth, dict) else ""
        if not isinstance(server, str) or not isinstance(token, str) or not token:
            raise CdsDataUnavailable(
                "prefetch incomplete (" + ",".join(data.missing) + ") and no fhirAuthorization"
            )
        if token_type.lower() != "bearer":
            raise CdsDataUnavailable("fhirAuthorization.token_type must be Bearer")
        issuer = self.verifier.issuer(iss)
        allowed = {s.rstrip("/") for s in (issuer.fhir_servers if issuer else [])}
        if allowed and server.rstrip("/") not in allowed:
            raise CdsDataUnavailable("fhirServer is not one of this issuer's fhir_servers")
        return self.service.fetch(data, server, token)

    # -- feedback ------------------------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        service_id = request.path_params["service_id"]
        if service_id != PATIENT_VIEW:
            return _error(404, "no such service")
        try:
            self._authorize(request, self._url(PATIENT_VIEW, "feedback"), self._url(PATIENT_VIEW))
        except JwtRefused as exc:
            log.warning("cds.refused", service=service_id, reason=exc.reason)
            return _error(401, "unauthorized", **{"WWW-Authenticate": "Bearer"})
        try:
            body = await _json_body(request)
        except _BadRequest as exc:
            return _error(400, str(exc))
        items = body.get("feedback")
        if not isinstance(items, list):
            return _error(400, "feedback must be a list")
        counted = 0
        for item in items:
            if not isinstance(item, dict) or item.get("outcome") not in OUTCOMES:
                continue
            rule = self.issued.rule_of(str(item.get("card"))) or "unknown"
            self.counters.feedback(service_id, rule, item["outcome"])
            counted += 1
        log.info("cds.feedback", service=service_id, counted=counted, ignored=len(items) - counted)
        return Response(status_code=200)
