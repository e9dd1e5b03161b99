"""The CDS Hooks use case: a patient's open alliance concerns when the EHR opens the chart.

The web layer (``alliance_fhir.web.cds``) speaks CDS Hooks; this module knows what data a
``patient-view`` needs and where it comes from:

* the **prefetch** templates the EHR fills in before calling (:meth:`CdsService.prefetch`):
  the patient, our score Observations (newest first), our alert Flags and Tasks;
* what the EHR did not prefetch is **fetched** from its ``fhirServer`` with the
  ``fhirAuthorization`` token it sent (:meth:`CdsService.fetch`): the same four queries, sent
  concurrently, to that server's origin only (paging links included), over https (plain
  http to loopback only with ``cds_allow_loopback_http``, for tests), never retried for long;
* the **concerns** are judged with the monitor's rules
  (:func:`alliance_fhir.monitoring.concerns.patient_concerns`).

Instruments and rules are loaded once per :class:`CdsService` (one per served app), so a
request with prefetch does no I/O at all. Nothing here logs patient data or the token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

import httpx

from alliance_fhir.adapters.identity import identifier_system
from alliance_fhir.app.alert_writer import OPEN_TASK_STATUSES, RECOVERED_REASON
from alliance_fhir.app.monitor import configured_rules
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import AllianceFhirError, ConfigError, FhirError
from alliance_fhir.fhir import BearerTokenAuth, FhirClient, RetryPolicy, Secret
from alliance_fhir.instruments.library import InstrumentLibrary, load_library
from alliance_fhir.log import get_logger
from alliance_fhir.monitoring.alerts import FLAG_KIND, TASK_KIND
from alliance_fhir.monitoring.concerns import Concern, patient_concerns
from alliance_fhir.monitoring.pull import patient_id_of
from alliance_fhir.monitoring.rules import Rule
from alliance_fhir.net import is_loopback

__all__ = [
    "KEYS",
    "CdsDataUnavailable",
    "CdsService",
    "Concern",
    "PatientData",
    "is_fhir_id",
]

log = get_logger("alliance_fhir.cds")

PrefetchKey = Literal["patient", "scores", "alertFlags", "alertTasks"]

#: The prefetch keys, in the order the discovery document lists them.
KEYS: Final[tuple[PrefetchKey, ...]] = ("patient", "scores", "alertFlags", "alertTasks")

#: Page size of the score search: 100 newest check-ins cover every rule but a baseline one.
SCORE_COUNT: Final = 100
#: Pages of scores we read ourselves before calling them incomplete.
MAX_SCORE_PAGES: Final = 20

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TEMPLATE_ID = "{{context.patientId}}"


def is_fhir_id(value: Any) -> bool:
    """Whether ``value`` is a FHIR resource id (what ``context.patientId`` must be)."""
    return isinstance(value, str) and _FHIR_ID.match(value) is not None


class CdsDataUnavailable(AllianceFhirError):
    """The data a hook needs was neither prefetched nor fetchable (CDS Hooks: HTTP 412).
    The message names what was missing or the server's status, never patient data."""


@dataclass
class PatientData:
    """What one ``patient-view`` reads. ``missing`` are the prefetch keys still to fetch;
    ``scores_complete`` is False when older score Observations may be left out."""

    patient_id: str
    patient: dict[str, Any] | None = None
    observations: list[dict[str, Any]] = field(default_factory=list)
    flags: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    scores_complete: bool = True
    missing: tuple[PrefetchKey, ...] = ()
    fetched: tuple[PrefetchKey, ...] = ()


def _has_next(bundle: Mapping[str, Any]) -> bool:
    return any(
        isinstance(link, Mapping) and link.get("relation") == "next" and link.get("url")
        for link in bundle.get("link") or []
    )


def _matches(bundle: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    for entry in bundle.get("entry") or []:
        if not isinstance(entry, Mapping):
            continue
        resource = entry.get("resource")
        mode = (entry.get("search") or {}).get("mode")
        if isinstance(resource, dict) and mode in (None, "match"):
            yield resource


def _of_patient(
    resources: Iterable[dict[str, Any]], patient_id: str, subject: str
) -> list[dict[str, Any]]:
    """Only the resources about this patient: an EHR's search (or a forged prefetch) that
    returns another patient's resources must never put them on this patient's cards."""
    return [r for r in resources if patient_id_of(r.get(subject)) == patient_id]


class CdsService:
    """The ``patient-view`` use case for one configuration (instruments and rules loaded
    once; ``clock`` gives the evaluation time)."""

    def __init__(
        self,
        settings: Settings,
        *,
        library: InstrumentLibrary | None = None,
        rules: Sequence[Rule] | None = None,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.settings = settings
        extra = [settings.mappings_dir] if settings.mappings_dir else []
        self.library = library or load_library(extra)
        self.rules = list(rules if rules is not None else configured_rules(self.library, settings))
        self._clock = clock or (lambda: datetime.now(UTC))
        self._transport = transport
        ns = settings.identifier_namespace
        self._systems: dict[PrefetchKey, str] = {
            "scores": identifier_system("score", ns),
            "alertFlags": identifier_system(FLAG_KIND, ns),
            "alertTasks": identifier_system(TASK_KIND, ns),
        }

    # -- what the EHR is asked for -------------------------------------------------------

    def _query(self, key: PrefetchKey, patient: str) -> tuple[str, dict[str, str]]:
        if key == "patient":
            return f"Patient/{patient}", {}
        rtype = {"scores": "Observation", "alertFlags": "Flag", "alertTasks": "Task"}[key]
        params = {"patient": patient, "identifier": f"{self._systems[key]}|"}
        if key == "scores":
            params |= {"_sort": "-date", "_count": str(SCORE_COUNT)}
        return rtype, params

    def prefetch(self) -> dict[str, str]:
        """The prefetch templates of the discovery document (key -> relative FHIR URL)."""
        out: dict[str, str] = {}
        for key in KEYS:
            path, params = self._query(key, _TEMPLATE_ID)
            query = "&".join(f"{k}={v}" for k, v in params.items())
            out[key] = f"{path}?{query}" if query else path
        return out

    # -- reading what the EHR sent -------------------------------------------------------

    def read_prefetch(self, patient_id: str, prefetch: Mapping[str, Any] | None) -> PatientData:
        """The prefetched data; a key absent, null or not the expected shape is ``missing``
        (fetched if the request allows, else the hook cannot be answered)."""
        data = PatientData(patient_id)
        given = prefetch or {}
        missing: list[PrefetchKey] = []
        patient = given.get("patient")
        if (
            isinstance(patient, dict)
            and patient.get("resourceType") == "Patient"
            and patient.get("id") == patient_id
        ):
            data.patient = patient
        else:
            missing.append("patient")
        for key in KEYS[1:]:
            bundle = given.get(key)
            if not isinstance(bundle, Mapping) or bundle.get("resourceType") != "Bundle":
                missing.append(key)
                continue
            self._take(data, key, list(_matches(bundle)), complete=not _has_next(bundle))
        data.missing = tuple(missing)
        return data

    def _take(
        self, data: PatientData, key: PrefetchKey, found: list[dict[str, Any]], *, complete: bool
    ) -> None:
        pid = data.patient_id
        if key == "scores":
            data.observations = _of_patient(found, pid, "subject")
            data.scores_complete = complete
        elif key == "alertFlags":
            data.flags = _of_patient(found, pid, "subject")
        elif key == "alertTasks":
            data.tasks = _of_patient(found, pid, "for")

    # -- fetching what was not prefetched ------------------------------------------------

    def _client(self, fhir_server: str, token: str) -> FhirClient:
        url = httpx.URL(fhir_server)
        loopback_ok = self.settings.cds_allow_loopback_http and is_loopback(url.host)
        if url.scheme != "https" and not (url.scheme == "http" and loopback_ok):
            raise CdsDataUnavailable("fhirServer must be an https:// URL")
        verify: bool | str = self.settings.verify_tls
        if self.settings.verify_tls and self.settings.ca_bundle is not None:
            verify = str(self.settings.ca_bundle)
        timeout = self.settings.cds_fetch_timeout_seconds
        return FhirClient(
            fhir_server,
            auth=BearerTokenAuth(Secret(token, origin="cds")),
            transport=self._transport,
            timeout=timeout,
            retry=RetryPolicy(max_attempts=2, base_delay=0.1, max_delay=0.5, deadline=timeout),
            verify=verify,
            max_connections=len(KEYS),
            max_pages=MAX_SCORE_PAGES,
        )

    def fetch(self, data: PatientData, fhir_server: str, token: str) -> PatientData:
        """``data`` with its ``missing`` keys read from ``fhir_server`` with ``token``
        (concurrently); CdsDataUnavailable when the server cannot be used or refuses."""
        if not data.missing:
            return data
        try:
            client = self._client(fhir_server, token)
        except ConfigError as exc:
            raise CdsDataUnavailable("fhirServer is not a usable FHIR base URL") from exc
        pid = data.patient_id
        try:
            with client, ThreadPoolExecutor(max_workers=len(data.missing)) as pool:
                futures = {key: pool.submit(self._read, client, key, pid) for key in data.missing}
                results = {key: f.result() for key, f in futures.items()}
        except FhirError as exc:
            log.warning("cds.fetch_failed", status=exc.status, error=type(exc).__name__)
            status = f"HTTP {exc.status}" if exc.status else type(exc).__name__
            raise CdsDataUnavailable(f"the FHIR server could not be read ({status})") from exc
        out = replace(data, missing=(), fetched=data.missing)
        for key, (found, complete) in results.items():
            if key == "patient":
                out.patient = found[0] if found else None
            else:
                self._take(out, key, found, complete=complete)
        return out

    def _read(
        self, client: FhirClient, key: PrefetchKey, patient_id: str
    ) -> tuple[list[dict[str, Any]], bool]:
        path, params = self._query(key, patient_id)
        if key == "patient":
            return [client.read("Patient", patient_id).resource], True
        found: list[dict[str, Any]] = []
        pages = client.iter_pages(path, params, max_pages=MAX_SCORE_PAGES + 1)
        for n, bundle in enumerate(pages, start=1):
            if n > MAX_SCORE_PAGES:
                return found, False
            found.extend(_matches(bundle))
        return found, True

    # -- judging -------------------------------------------------------------------------

    def concerns(self, data: PatientData, *, as_of: datetime | None = None) -> list[Concern]:
        """The patient's open alliance concerns, most severe first (none: nothing wrong)."""
        return patient_concerns(
            data.patient_id,
            rules=self.rules,
            instruments=self.library.all(),
            observations=data.observations,
            flags=data.flags,
            tasks=data.tasks,
            as_of=as_of or self._clock(),
            canonical_base=self.settings.canonical_base,
            namespace=self.settings.identifier_namespace,
            open_task_statuses=OPEN_TASK_STATUSES,
            recovered_reason=RECOVERED_REASON,
            observations_complete=data.scores_complete,
        )
