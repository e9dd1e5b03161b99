"""The client's check-in page: ``GET /checkin/<token>`` renders the form, ``POST`` submits.

The token is opaque (``api.checkin_links``): the URL names no patient. The page is one HTML
document with the instrument's Questionnaire embedded as JSON and LHC-Forms (served from
``/assets/checkin/lforms``, built by ``make web-assets``) rendering it. A submission is the
renderer's answers only; the server builds, checks, scores and writes the response through
``alliance_fhir.api`` and answers with JSON. Refusals (bad, expired, used link; missing
answers) are 4xx with a sentence for the client; nothing is logged but codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from alliance_fhir.api.checkin import Checkins, LinkRefused
from alliance_fhir.exceptions import AllianceFhirError, InvalidInputError
from alliance_fhir.log import get_logger
from alliance_fhir.web.checkin.page import form_page, refusal_page

__all__ = ["STATIC_DIR", "routes"]

STATIC_DIR = Path(__file__).parent / "static"
LFORMS_DIR = STATIC_DIR / "lforms"
#: A submission is a few dozen answers; anything larger is not one.
_MAX_BODY = 256 * 1024

log = get_logger("alliance_fhir.web.checkin")


def routes(checkins: Checkins) -> list[BaseRoute]:
    """The check-in page's routes on ``checkins``."""

    def page(request: Request) -> Response:
        if not (LFORMS_DIR / "lhc-forms.js").is_file():
            log.error("checkin.assets_missing", fix="make web-assets")
            return refusal_page(503, "The check-in page is not installed yet (make web-assets).")
        try:
            form = checkins.open(request.path_params["token"])
        except LinkRefused as exc:
            log.info("checkin.refused", status=exc.status)
            return refusal_page(exc.status, exc.message)
        return form_page(form)

    async def submit(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _message(415, "Submit the form as JSON.")
        body = await request.body()
        if len(body) > _MAX_BODY:
            return _message(413, "This submission is too large.")
        try:
            items = _items(await request.json())
        except ValueError:
            return _message(400, "This submission could not be read.")
        return await run_in_threadpool(_submit, request.path_params["token"], items)

    def _submit(token: str, items: list[Any]) -> Response:
        try:
            outcome = checkins.submit(token, items)
        except LinkRefused as exc:
            log.info("checkin.refused", status=exc.status)
            return _message(exc.status, exc.message)
        except InvalidInputError as exc:
            log.info("checkin.incomplete", problems=len(exc.problems))
            return JSONResponse(
                {
                    "message": "Some answers are missing or not valid. Please check the form.",
                    "problems": [{"field": p.field, "reason": p.reason} for p in exc.problems],
                },
                status_code=422,
            )
        except AllianceFhirError as exc:
            log.error("checkin.write_failed", error=type(exc).__name__)
            return _message(503, "Your answers could not be saved just now. Please try again.")
        return JSONResponse({"message": "Thank you! Your answers were sent.", "key": outcome.key})

    return [
        Route("/checkin/{token}", page, methods=["GET"]),
        Route("/checkin/{token}", submit, methods=["POST"]),
        Mount("/assets/checkin", StaticFiles(directory=STATIC_DIR, check_dir=False)),
    ]


def _items(body: Any) -> list[Any]:
    """The answers of a submission: ``{"item": [...]}`` (the renderer's export)."""
    if not isinstance(body, dict) or not isinstance(body.get("item", []), list):
        raise ValueError("expected an object with an item list")
    return list(body.get("item") or [])


def _message(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)
