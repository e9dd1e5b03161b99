"""The SMART view's endpoints: launch (EHR and standalone), callback, the page, the patient
picker and the two alert actions.

Every answer is ``Cache-Control: no-store`` with a strict Content-Security-Policy (no
scripts at all, forms post to us only) and ``Referrer-Policy: same-origin``. No patient data
is ever in a URL: the patient comes from the token response (or the picker's form body) and
lives in the server-side session. Logs name events, reasons and the server's host; never a
token, a code, a patient or what they said.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from alliance_fhir.api.smart import ClinicianViews
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConflictError, FhirError, InvalidInputError
from alliance_fhir.log import get_logger, register_sensitive
from alliance_fhir.web.smart import oauth, pages
from alliance_fhir.web.smart.sessions import (
    COOKIE,
    Pending,
    Session,
    SessionStore,
    set_session_cookie,
)

__all__ = ["SmartViews"]

log = get_logger("alliance_fhir.web.smart")

_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; base-uri 'none'"
    ),
    # same-origin, not no-referrer: under no-referrer Chromium posts forms with
    # ``Origin: null``, which the Origin check below must refuse
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_MAX_FORM = 4096
_WRITE_SCOPES = ("patient/Task.u", "patient/Task.cu", "patient/Task.cud", "patient/Task.cruds")


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=_HEADERS)


def _credentials(session: Session) -> tuple[str, str]:
    """The signed-in session's server and token (callers checked ``signed_in``)."""
    return session.iss or "", session.token or ""


def _can_write(scopes: frozenset[str]) -> bool:
    return any(s in scopes for s in _WRITE_SCOPES) or "patient/*.u" in scopes


class SmartViews:
    """The endpoints, sharing one session store, one HTTP client for the OAuth requests and
    one :class:`ClinicianViews`. ``transport`` and ``clock`` are the tests' seams."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = SessionStore(
            ttl=settings.smart_app_session_minutes * 60,
            limit=settings.smart_app_max_sessions,
            clock=clock,
        )
        self._clock = clock
        verify: bool | str = settings.verify_tls
        if settings.verify_tls and settings.ca_bundle is not None:
            verify = str(settings.ca_bundle)
        self.http = httpx.Client(transport=transport, verify=verify, follow_redirects=False)
        self.views = ClinicianViews(settings, transport=transport)

    # -- helpers ---------------------------------------------------------------------------

    def _client_id(self) -> str:
        if not self.settings.smart_app_client_id:
            raise oauth.LaunchError(
                "This app is not configured for SMART launch (smart_app_client_id).",
                status=500,
                reason="not_configured",
            )
        return self.settings.smart_app_client_id

    def _redirect_uri(self, request: Request) -> str:
        base = self.settings.smart_app_url or str(request.base_url)
        return base.rstrip("/") + "/callback"

    def _with_cookie(self, response: Response, session: Session, request: Request) -> Response:
        max_age = int(self.settings.smart_app_session_minutes * 60)
        host = request.url.hostname or ""
        set_session_cookie(response, session, host=host, max_age=max_age)
        return response

    def _session(self, request: Request) -> Session | None:
        return self.store.get(request.cookies.get(COOKIE))

    def _refused(self, exc: oauth.LaunchError, event: str) -> HTMLResponse:
        log.warning(event, reason=exc.reason, status=exc.status)
        return _html(pages.message_page("The app could not start", exc.message), exc.status)

    async def _form(self, request: Request, session: Session) -> dict[str, str] | None:
        """The posted form when its CSRF token is the session's and any Origin is ours."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return None
        body = await request.body()
        if len(body) > _MAX_FORM:
            return None
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
        sent = fields.get("csrf", "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            return None
        return fields

    # -- launch ----------------------------------------------------------------------------

    async def launch(self, request: Request) -> Response:
        """EHR launch: ``/launch?iss=...&launch=...``."""
        launch = request.query_params.get("launch")
        try:
            iss = oauth.allowed_issuer(
                request.query_params.get("iss"), self.settings.smart_app_issuers
            )
            if not launch:
                raise oauth.LaunchError("The EHR launch carried no launch context (launch).")
            return await self._start(request, iss, launch=launch, standalone=False)
        except oauth.LaunchError as exc:
            return self._refused(exc, "smart.launch_refused")

    async def launch_standalone(self, request: Request) -> Response:
        """Standalone launch: the configured server (``?iss=`` picks one of several)."""
        servers = self.settings.smart_app_issuers
        chosen = request.query_params.get("iss")
        try:
            if chosen is None and len(servers) != 1:
                if not servers:
                    raise oauth.LaunchError(
                        "No FHIR server is configured (smart_app_issuers).", status=500
                    )
                return _html(pages.server_choice_page(servers))
            iss = oauth.allowed_issuer(chosen or servers[0], servers)
            return await self._start(request, iss, launch=None, standalone=True)
        except oauth.LaunchError as exc:
            return self._refused(exc, "smart.launch_refused")

    async def _start(
        self, request: Request, iss: str, *, launch: str | None, standalone: bool
    ) -> Response:
        client_id = self._client_id()
        endpoints = await run_in_threadpool(oauth.discover, self.http, iss)
        verifier, challenge = oauth.pkce_pair()
        state = oauth.new_state()
        scope = self.settings.smart_app_scopes
        if standalone:
            scope = " ".join("launch/patient" if s == "launch" else s for s in scope.split())
        redirect_uri = self._redirect_uri(request)
        session = self.store.new()
        session.pending = Pending(
            state=state,
            verifier=verifier,
            iss=iss,
            token_endpoint=endpoints.token,
            redirect_uri=redirect_uri,
            standalone=standalone,
        )
        url = oauth.authorize_url(
            endpoints,
            client_id=client_id,
            redirect_uri=redirect_uri,
            scope=scope,
            state=state,
            challenge=challenge,
            aud=iss,
            launch=launch,
        )
        log.info("smart.launch", server=urlsplit(iss).hostname, standalone=standalone)
        response = RedirectResponse(url, status_code=302, headers=_HEADERS)
        return self._with_cookie(response, session, request)

    async def callback(self, request: Request) -> Response:
        """The authorization server's redirect back: check ``state``, redeem the code."""
        session = self._session(request)
        pending = session.pending if session else None
        try:
            if session is None or pending is None:
                raise oauth.LaunchError(
                    "This sign-in was not started here, or it took too long: launch the app "
                    "again from the EHR.",
                    reason="no_pending",
                )
            # one attempt per authorization, whatever happens next
            session.pending = None
            state = request.query_params.get("state", "")
            if not hmac.compare_digest(state.encode(), pending.state.encode()):
                raise oauth.LaunchError(
                    "The sign-in could not be verified (its state does not match): launch "
                    "the app again.",
                    reason="state_mismatch",
                )
            if request.query_params.get("error"):
                raise oauth.LaunchError(
                    "The sign-in was refused or cancelled: launch the app again.",
                    reason="authorize_error",
                )
            code = request.query_params.get("code")
            if not code:
                raise oauth.LaunchError("The sign-in came back without a code.", reason="no_code")
            register_sensitive(code)
            grant = await run_in_threadpool(
                oauth.exchange_code,
                self.http,
                token_endpoint=pending.token_endpoint,
                code=code,
                verifier=pending.verifier,
                redirect_uri=pending.redirect_uri,
                client_id=self._client_id(),
            )
        except oauth.LaunchError as exc:
            if session is not None:
                self.store.drop(session)
            return self._refused(exc, "smart.callback_refused")
        register_sensitive(grant.access_token)
        if grant.patient is not None and not _ID.match(grant.patient):
            self.store.drop(session)
            return self._refused(
                oauth.LaunchError("The launch context names no usable patient."),
                "smart.callback_refused",
            )
        session.iss = pending.iss
        session.token = grant.access_token
        session.scopes = grant.scopes
        session.patient = grant.patient
        if grant.expires_in is not None:
            session.token_expires = self._clock() + grant.expires_in
        session = self.store.rotate(session)
        log.info(
            "smart.signed_in", server=urlsplit(pending.iss).hostname, context=bool(grant.patient)
        )
        return self._with_cookie(_redirect(pages.VIEW_PATH), session, request)

    # -- the page --------------------------------------------------------------------------

    def _signed_in(self, request: Request) -> Session | None:
        session = self._session(request)
        return session if session is not None and session.signed_in else None

    @staticmethod
    def _expired_page() -> HTMLResponse:
        return _html(
            pages.message_page(
                "Session ended",
                "This session has ended or was never started: launch the app again from the EHR.",
            ),
            401,
        )

    def _fhir_refused(self, exc: FhirError, session: Session) -> HTMLResponse:
        log.warning("smart.fhir_refused", status=exc.status)
        if exc.status == 401:
            self.store.drop(session)
            return self._expired_page()
        if exc.status == 403:
            return _html(
                pages.message_page(
                    "Not allowed",
                    "The FHIR server refused: your sign-in does not allow reading these records.",
                ),
                403,
            )
        return _html(
            pages.message_page("The FHIR server could not be read", "Try again in a moment."),
            502,
        )

    async def page(self, request: Request) -> Response:
        """The report of the patient in context (or the picker when there is none)."""
        session = self._signed_in(request)
        if session is None:
            return self._expired_page()
        iss, token = _credentials(session)
        try:
            if session.patient is None:
                found = await run_in_threadpool(self.views.patients, iss, token)
                return _html(pages.picker_page(found, session.csrf))
            notice, session.notice = session.notice, None
            can_write = _can_write(session.scopes)
            csrf = session.csrf
            body = await run_in_threadpool(
                self.views.page_html,
                iss,
                token,
                session.patient,
                controls=lambda c: pages.alert_controls(c, csrf, can_write=can_write),
                notice=pages.notice_html(notice),
            )
        except FhirError as exc:
            return self._fhir_refused(exc, session)
        return _html(body)

    async def pick(self, request: Request) -> Response:
        """The picker's choice; only while the launch gave no patient (a launch context is
        never replaced by a form)."""
        session = self._signed_in(request)
        if session is None:
            return self._expired_page()
        form = await self._form(request, session)
        if form is None:
            return _html(pages.message_page("Refused", "The form could not be verified."), 403)
        chosen = form.get("patient", "")
        if session.patient is not None or not _ID.match(chosen):
            return _html(pages.message_page("Refused", "That patient cannot be chosen."), 403)
        session.patient = chosen
        return _redirect(pages.VIEW_PATH)

    async def acknowledge(self, request: Request) -> Response:
        return await self._act(request, "acknowledge")

    async def discussed(self, request: Request) -> Response:
        return await self._act(request, "discussed")

    async def _act(self, request: Request, action: str) -> Response:
        session = self._signed_in(request)
        if session is None:
            return self._expired_page()
        form = await self._form(request, session)
        if form is None or session.patient is None:
            return _html(pages.message_page("Refused", "The form could not be verified."), 403)
        task = form.get("task", "")
        version = form.get("version") or None
        if not _ID.match(task) or (version is not None and not _ID.match(version)):
            return _html(pages.message_page("Refused", "That alert cannot be changed."), 400)
        iss, token = _credentials(session)
        do = self.views.acknowledge if action == "acknowledge" else self.views.mark_discussed
        try:
            await run_in_threadpool(do, iss, token, session.patient, task, version)
        except ConflictError:
            log.info("smart.action", action=action, outcome="conflict")
            session.notice = (
                "This alert was changed meanwhile (someone else edited it), so nothing was "
                "saved. The page below has been reloaded: check it, then try again if still "
                "needed."
            )
            return _redirect(pages.VIEW_PATH)
        except InvalidInputError:
            return _html(pages.message_page("Not found", "No such alert for this patient."), 404)
        except FhirError as exc:
            return self._fhir_refused(exc, session)
        log.info("smart.action", action=action, outcome="saved")
        session.notice = (
            "Alert acknowledged." if action == "acknowledge" else "Marked as discussed with client."
        )
        return _redirect(pages.VIEW_PATH)

    def close(self) -> None:
        self.http.close()
