"""The SMART clinician view's use cases, on the FHIR server that launched it, with the
clinician's own access token (never our configured credentials).

The web layer (``web.smart``) does the OAuth dance and keeps the session; everything it reads
or writes on the FHIR server goes through :class:`ClinicianViews`: the report page (the same
renderer as ``alliance-fhir report``), acknowledging an alert, marking it discussed with the
client, and the patient picker of a standalone launch. The server enforces what the token
allows: a token for another patient gets the server's 401/403 as ``FatalError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from alliance_fhir.app import clinician_actions
from alliance_fhir.app.alert_writer import OpenOnServer
from alliance_fhir.app.monitor import configured_rules
from alliance_fhir.app.reports import Reports
from alliance_fhir.config import Settings
from alliance_fhir.fhir import BearerTokenAuth, FhirClient, RetryPolicy, Secret
from alliance_fhir.instruments.library import InstrumentLibrary, load_library
from alliance_fhir.monitoring.pull import NO_CACHE
from alliance_fhir.monitoring.rules import Rule

__all__ = ["AlertControl", "ClinicianViews", "PatientChoice"]


@dataclass(frozen=True)
class AlertControl:
    """What the page needs to offer actions on one open alert: the Task to edit and the
    version shown (sent back as If-Match), its status, and when it was last discussed."""

    task_id: str | None
    version: str | None
    status: str | None
    discussed: str | None


@dataclass(frozen=True)
class PatientChoice:
    """One patient offered by the standalone launch's picker (shown on the page only)."""

    patient_id: str
    name: str
    birth_date: str | None


def _control(entry: OpenOnServer) -> AlertControl:
    task = entry.task or {}
    version = (task.get("meta") or {}).get("versionId")
    return AlertControl(
        task_id=str(task["id"]) if task.get("id") else None,
        version=str(version) if version else None,
        status=str(task["status"]) if task.get("status") else None,
        discussed=clinician_actions.discussed_on(task) if task else None,
    )


def _name(patient: dict[str, Any]) -> str:
    for name in patient.get("name") or []:
        if not isinstance(name, dict):
            continue
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or []), name.get("family") or ""]
        text = " ".join(str(p) for p in parts if p)
        if text:
            return text
    return f"Patient {patient.get('id')}"


class ClinicianViews:
    """One per app: the instruments and rules are read once; each call opens a client on the
    launching server with the clinician's token. ``transport`` is the tests' seam."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self._transport = transport
        self._now = now or (lambda: datetime.now(UTC))
        self._library: InstrumentLibrary | None = None
        self._rules: list[Rule] | None = None

    @property
    def library(self) -> InstrumentLibrary:
        if self._library is None:
            extra = [self.settings.mappings_dir] if self.settings.mappings_dir else []
            self._library = load_library(extra)
        return self._library

    @property
    def rules(self) -> list[Rule]:
        if self._rules is None:
            self._rules = configured_rules(self.library, self.settings)
        return self._rules

    @contextmanager
    def _client(self, iss: str, token: str) -> Iterator[FhirClient]:
        verify: bool | str = self.settings.verify_tls
        if self.settings.verify_tls and self.settings.ca_bundle is not None:
            verify = str(self.settings.ca_bundle)
        client = FhirClient(
            iss,
            auth=BearerTokenAuth(Secret(token, origin="SMART launch")),
            transport=self._transport,
            timeout=self.settings.timeout_seconds,
            # a person is waiting: one quick retry at most, never a long back-off
            retry=RetryPolicy(max_attempts=2, deadline=10.0),
            verify=verify,
            allow_insecure_http=self.settings.allow_insecure_http,
        )
        try:
            yield client
        finally:
            client.close()

    def page_html(
        self,
        iss: str,
        token: str,
        patient_id: str,
        *,
        controls: Callable[[AlertControl], str],
        notice: str = "",
    ) -> str:
        """The report of ``patient_id`` (the one in the token's launch context), with
        ``controls(alert)`` beside each open alert and ``notice`` above them."""
        settings = self.settings.model_copy(update={"server_url": iss.rstrip("/")})
        with self._client(iss, token) as client:
            reports = Reports(client, self.library, settings, self.rules, now=self._now)
            return reports.report_html(
                f"Patient/{patient_id}",
                alert_controls=lambda entry: controls(_control(entry)),
                notice=notice,
            )

    def acknowledge(
        self, iss: str, token: str, patient_id: str, task_id: str, version: str | None
    ) -> None:
        """Acknowledge the alert's Task (``accepted``); ConflictError when it changed since
        ``version``, InvalidInputError when it is not an alert of this patient."""
        with self._client(iss, token) as client:
            clinician_actions.acknowledge(
                client, self.settings, patient_id, task_id, version, now=self._now()
            )

    def mark_discussed(
        self, iss: str, token: str, patient_id: str, task_id: str, version: str | None
    ) -> None:
        """Record on the alert's Task that it was discussed with the client (see
        ``app.clinician_actions``); errors as :meth:`acknowledge`."""
        with self._client(iss, token) as client:
            clinician_actions.mark_discussed(
                client, self.settings, patient_id, task_id, version, now=self._now()
            )

    def patients(self, iss: str, token: str, *, limit: int = 50) -> list[PatientChoice]:
        """Patients the token may read, for the standalone picker (first ``limit``)."""
        with self._client(iss, token) as client:
            page = client.search_page("Patient", {"_count": str(limit)}, headers=NO_CACHE)
        out = []
        for entry in page.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("id"):
                birth = resource.get("birthDate")
                out.append(
                    PatientChoice(
                        str(resource["id"]), _name(resource), str(birth) if birth else None
                    )
                )
        return out
