"""The one ASGI app of ``alliance-fhir serve``: each feature package adds its routes.

A feature package (``web.checkin``, ``web.cds``, ``web.smart``) exposes
``routes(...) -> list[BaseRoute]``; :func:`create_app` mounts them and wraps every answer in
:class:`SecurityHeaders`. Nothing here logs a path: check-in paths carry a token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alliance_fhir.api.checkin import Checkins
from alliance_fhir.config import Settings
from alliance_fhir.web import cds, checkin, smart

__all__ = ["CSP", "SecurityHeaders", "create_app"]

#: Everything from our own origin, nothing from anyone else. Inline ``style`` is allowed
#: because the renderer (an Angular web component) injects its component styles as
#: ``<style>`` elements at run time; inline *scripts* stay refused.
CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
#: Static files (same bytes for every client) may be cached; pages and answers never.
_CACHEABLE_PREFIX = "/assets/"


class SecurityHeaders:
    """Adds the security headers to every HTTP answer that does not set its own, and
    ``Cache-Control: no-store`` to every one but our static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cacheable = str(scope.get("path", "")).startswith(_CACHEABLE_PREFIX)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"cache-control" or cacheable
                ]
                # A feature's own, stricter policy wins (the SMART view sets its CSP, and
                # Referrer-Policy same-origin so its forms post with a real Origin header):
                # two of one header would be merged by the browser, the last one winning.
                present = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in _HEADERS if k not in present)
                if not cacheable:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, *, checkins: Checkins | None = None) -> Starlette:
    """The app: the check-in page (``checkins`` defaults to a new :class:`Checkins` on
    ``settings``, closed with the app), the CDS Hooks service and the SMART clinician view."""
    service = checkins or Checkins(settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if checkins is None:
                service.close()

    return Starlette(
        routes=[*checkin.routes(service), *cds.routes(settings), *smart.routes(settings)],
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
