"""Server-side sessions of the SMART view: in memory, bounded, expiring.

The browser holds only an opaque random id in a cookie (HttpOnly, SameSite=Lax, Secure
except on a loopback host); the access token, the launch context and the pending
authorization (state, PKCE verifier) stay here. A session lives ``ttl`` seconds after its
last use and never longer than the token it holds; past ``limit`` sessions the least
recently used one is dropped. A restart forgets every session: clinicians launch again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.responses import Response

from alliance_fhir.net import is_loopback

__all__ = ["COOKIE", "Pending", "Session", "SessionStore", "set_session_cookie"]

#: The session cookie's name.
COOKIE = "alliance_smart"


@dataclass
class Pending:
    """An authorization under way: what the callback must match and needs to redeem it."""

    state: str
    verifier: str
    iss: str
    token_endpoint: str
    redirect_uri: str
    standalone: bool


@dataclass
class Session:
    """One clinician's session. ``token`` is the FHIR access token (never sent to the
    browser); ``patient`` the launch context's Patient id; ``csrf`` the token every form
    posts back; ``notice`` a one-time message for the next page."""

    sid: str
    csrf: str
    created: float
    seen: float
    pending: Pending | None = None
    iss: str | None = None
    token: str | None = None
    token_expires: float | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    patient: str | None = None
    notice: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.token is not None and self.iss is not None


class SessionStore:
    """Sessions by id; thread-safe (Starlette runs sync endpoints in a thread pool)."""

    def __init__(
        self, *, ttl: float, limit: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def new(self) -> Session:
        """A fresh session (a new id every launch and every sign-in: no fixation)."""
        now = self._clock()
        session = Session(
            sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, seen=now
        )
        with self._lock:
            self._sessions[session.sid] = session
            while len(self._sessions) > self.limit:
                self._sessions.popitem(last=False)
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session of ``sid`` (touched), or None when unknown or expired."""
        if not sid:
            return None
        now = self._clock()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            expired = now - session.seen > self.ttl or (
                session.token_expires is not None and now >= session.token_expires
            )
            if expired:
                del self._sessions[sid]
                return None
            session.seen = now
            self._sessions.move_to_end(sid)
            return session

    def rotate(self, session: Session) -> Session:
        """The same session under a new id and CSRF token (after sign-in); the old id dies."""
        with self._lock:
            self._sessions.pop(session.sid, None)
            session.sid = secrets.token_urlsafe(32)
            session.csrf = secrets.token_urlsafe(32)
            session.seen = self._clock()
            self._sessions[session.sid] = session
        return session

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.sid, None)


def set_session_cookie(response: Response, session: Session, *, host: str, max_age: int) -> None:
    """The session's cookie on ``response``: HttpOnly, SameSite=Lax, path ``/``, Secure
    unless the app is reached on loopback."""
    response.set_cookie(
        COOKIE,
        session.sid,
        max_age=max_age,
        path="/",
        httponly=True,
        secure=not is_loopback(host),
        samesite="lax",
    )
