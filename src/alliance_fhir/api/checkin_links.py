"""Check-in links: single-use, expiring, tamper-evident, and opaque.

A link is ``<checkin_base_url>/checkin/<token>``. The token is a Fernet token (AES-128-CBC
plus HMAC-SHA256) holding a random id, the patient's identifier, the instrument, an optional
encounter and the expiry: a proxy that logs the URL sees no MRN, and a changed byte fails
the HMAC. The key is derived (HKDF) from ``ALLIANCE_FHIR_CHECKIN_SECRET`` or the 0600 file
named by ``checkin_secret_file``, never from the command line or the config file.

Single use is recorded in the state store as the SHA-256 of the random id (the table
``checkin_used``: no PHI), so it survives a restart of ``serve``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConfigError, InvalidInputError, Problem
from alliance_fhir.sync.state import StateStore

__all__ = [
    "MAX_LIFETIME",
    "CheckinClaims",
    "CheckinLink",
    "LinkRefused",
    "UsedLinks",
    "create_checkin_link",
    "parse_lifetime",
    "read_token",
]

#: The longest a link may live: a check-in is for one visit, not a standing invitation.
MAX_LIFETIME = timedelta(days=7)
_MIN_SECRET = 32
_HKDF_INFO = b"alliance-fhir check-in link v1"
_LIFETIME = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class LinkRefused(Exception):
    """A link that cannot be used: ``status`` is the HTTP status, ``message`` the sentence the
    client reads (never PHI)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def tampered() -> LinkRefused:
    return LinkRefused(400, "This check-in link is not valid. Please ask for a new one.")


def expired() -> LinkRefused:
    return LinkRefused(410, "This check-in link has expired. Please ask for a new one.")


def used() -> LinkRefused:
    return LinkRefused(409, "This check-in has already been submitted. Thank you!")


@dataclass(frozen=True)
class CheckinClaims:
    """What a token holds. ``patient`` is ``system|value`` (PHI: never logged)."""

    link_id: str
    patient: str
    instrument: str
    encounter: str | None
    expires: datetime
    #: ``system|value`` of the clinician who answers a clinician-completed form.
    practitioner: str | None = None

    @property
    def id_hash(self) -> str:
        """What the state store keeps of a used link (the random id's SHA-256)."""
        return hashlib.sha256(self.link_id.encode()).hexdigest()

    @property
    def assessment_key(self) -> str:
        """The assessment key of the response this link creates (our identifier's value):
        derived from the link, so even a replayed write would be the same record."""
        return f"checkin-{self.id_hash[:32]}"


@dataclass(frozen=True)
class CheckinLink:
    url: str
    token: str
    expires: datetime
    instrument: str


def parse_lifetime(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``: positive and at most :data:`MAX_LIFETIME`."""
    match = _LIFETIME.match(text.strip().lower())
    if match is None:
        raise InvalidInputError(
            Problem("--expires", "expires", "expected a number and s, m, h or d (e.g. 2h)")
        )
    lifetime = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        raise InvalidInputError(
            Problem("--expires", "expires", "must be more than 0 and at most 7 days")
        )
    return lifetime


def _fernet(settings: Settings) -> Fernet:
    secret = settings.secret("checkin_secret")
    if not secret:
        raise ConfigError(
            "check-in links need a secret: set ALLIANCE_FHIR_CHECKIN_SECRET or "
            "checkin_secret_file (a 0600 file), at least 32 characters"
        )
    if len(secret) < _MIN_SECRET:
        raise ConfigError("the check-in secret must be at least 32 characters")
    kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return Fernet(base64.urlsafe_b64encode(kdf.derive(secret.encode())))


def patient_identifier(settings: Settings, patient: str) -> str:
    """``system|value``, or a bare value under ``patient_identifier_system``."""
    if "|" in patient:
        system, _, value = patient.partition("|")
        if system and value:
            return patient
    elif patient and settings.patient_identifier_system:
        return f"{settings.patient_identifier_system}|{patient}"
    raise InvalidInputError(
        Problem(
            "--patient",
            "patient",
            "expected system|value, or a value with patient_identifier_system configured",
        )
    )


def create_checkin_link(
    settings: Settings,
    *,
    patient: str,
    instrument: str,
    encounter: str | None = None,
    practitioner: str | None = None,
    lifetime: timedelta = timedelta(hours=2),
    now: datetime | None = None,
) -> CheckinLink:
    """A new link for one client to answer ``instrument`` once before it expires.

    ``patient`` is ``system|value`` (or a bare MRN with ``patient_identifier_system`` set);
    ``encounter`` an Encounter id or reference the response will point at; ``practitioner``
    (``system|value``) the clinician answering a clinician-completed form. The caller checks
    the instrument (:meth:`Checkins.link` does)."""
    if lifetime <= timedelta(0) or lifetime > MAX_LIFETIME:
        raise InvalidInputError(Problem("--expires", "expires", "must be at most 7 days"))
    expires = (now or datetime.now(UTC)) + lifetime
    body: dict[str, Any] = {
        "j": secrets.token_urlsafe(16),
        "p": patient_identifier(settings, patient),
        "i": instrument,
        "e": encounter.removeprefix("Encounter/") if encounter else None,
        "x": int(expires.timestamp()),
    }
    if practitioner:
        system, _, value = practitioner.partition("|")
        if not (system and value):
            raise InvalidInputError(
                Problem("--practitioner", "practitioner", "expected system|value")
            )
        body["r"] = practitioner
    token = _fernet(settings).encrypt(json.dumps(body, separators=(",", ":")).encode()).decode()
    url = f"{settings.checkin_base_url.rstrip('/')}/checkin/{token}"
    return CheckinLink(url=url, token=token, expires=expires, instrument=instrument)


def read_token(settings: Settings, token: str, *, now: datetime | None = None) -> CheckinClaims:
    """The claims of a genuine, unexpired token; :class:`LinkRefused` otherwise."""
    try:
        raw = _fernet(settings).decrypt(token.encode("ascii"))
        body = json.loads(raw)
        claims = CheckinClaims(
            link_id=str(body["j"]),
            patient=str(body["p"]),
            instrument=str(body["i"]),
            encounter=str(body["e"]) if body.get("e") else None,
            expires=datetime.fromtimestamp(int(body["x"]), UTC),
            practitioner=str(body["r"]) if body.get("r") else None,
        )
    except (InvalidToken, UnicodeError, ValueError, KeyError, TypeError) as exc:
        raise tampered() from exc
    if (now or datetime.now(UTC)) >= claims.expires:
        raise expired()
    return claims


class UsedLinks:
    """The used links, by hash of their random id, in the state store (table
    ``checkin_used``, made by the store's schema migration 3; SQLite or PostgreSQL)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def is_used(self, claims: CheckinClaims) -> bool:
        with self._store.transaction() as db:
            row = db.execute(
                "SELECT 1 FROM checkin_used WHERE id_hash=?", (claims.id_hash,)
            ).fetchone()
        return row is not None

    def claim(self, claims: CheckinClaims) -> None:
        """Mark the link used; :func:`used` when it already was (atomic: of two submits at
        once, one wins)."""
        with self._store.transaction() as db:
            inserted = db.execute(
                "INSERT INTO checkin_used (id_hash, used_at) VALUES (?, ?)"
                " ON CONFLICT (id_hash) DO NOTHING",
                (claims.id_hash, datetime.now(UTC).isoformat(timespec="seconds")),
            ).rowcount
        if inserted != 1:
            raise used()

    def release(self, claims: CheckinClaims) -> None:
        """Give a claimed link back (its write failed: the client may try again)."""
        with self._store.transaction() as db:
            db.execute("DELETE FROM checkin_used WHERE id_hash=?", (claims.id_hash,))
