"""Who a form filler's response is about: a FHIR reference turned into the business
identifier our records name people by.

A form renderer exports ``subject`` as ``{"reference": "Patient/123", "display": ...}``; our
records name patients (and clinicians) by identifier so that a conditional search finds them
on any server. :func:`reference_resolver` builds the reader's resolver hook
(``adapters.response_files.ReferenceResolver``) from, in this order:

1. the configured ``patient_map`` (reference -> ``system|value``): for exports whose
   references point at a server we cannot or may not read;
2. the server: ``Patient/<id>`` (or ``Practitioner/<id>``, relative or under our server's
   base URL) is read once per run, and its
   identifier in ``patient_identifier_system`` (for a patient), ``us-npi`` (for a
   practitioner), or else the one typed ``MR`` is taken. Never any other identifier: an EHR's
   Patient may carry a social security number, which must not become our reference.

An unknown reference resolves to None: the reader reports it as a problem of that response.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from alliance_fhir.adapters.response_files import ReferenceResolver
from alliance_fhir.assessments.model import Identifier
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import FatalError
from alliance_fhir.fhir.client import FhirClient
from alliance_fhir.log import register_sensitive

__all__ = ["NPI_SYSTEM", "reference_resolver"]

NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
_MR = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")
_LITERAL = re.compile(r"^(?P<type>Patient|Practitioner)/(?P<id>[A-Za-z0-9\-.]{1,64})$")


def _parse(text: str) -> Identifier | None:
    system, sep, value = text.partition("|")
    if not sep or not system or not value:
        return None
    return Identifier(system=system, value=value)


def _typed_mr(ident: Mapping[str, Any]) -> bool:
    codings = (ident.get("type") or {}).get("coding") or []
    return any((c.get("system"), c.get("code")) == _MR for c in codings if isinstance(c, Mapping))


def identifier_of(resource: Mapping[str, Any], preferred: str | None) -> Identifier | None:
    """The identifier of a Patient/Practitioner we may name it by (see module doc)."""
    idents = [
        i
        for i in resource.get("identifier") or []
        if isinstance(i, Mapping) and i.get("system") and i.get("value")
    ]
    chosen = next((i for i in idents if preferred and i["system"] == preferred), None)
    if chosen is None:
        chosen = next((i for i in idents if _typed_mr(i)), None)
    if chosen is None:
        return None
    return Identifier(system=str(chosen["system"]), value=str(chosen["value"]))


def reference_resolver(
    settings: Settings, client: Callable[[], FhirClient] | None
) -> ReferenceResolver:
    """The resolver hook: the patient map, then (when ``client`` is given) the server."""
    mapped = {ref: _parse(text) for ref, text in settings.patient_map.items()}
    seen: dict[str, Identifier | None] = {}
    ours = settings.server_url.rstrip("/") + "/"

    def resolve(reference: str) -> Identifier | None:
        if reference in mapped:
            return mapped[reference]
        # a reference to another server is never looked up on ours
        reference = reference.removeprefix(ours)
        if reference in seen:
            return seen[reference]
        match = _LITERAL.match(reference)
        found: Identifier | None = None
        if match is not None and client is not None:
            rtype = match.group("type")
            try:
                resource = client().read(rtype, match.group("id")).resource
            except FatalError as exc:
                if exc.status not in (404, 410):
                    raise
                resource = {}
            preferred = settings.patient_identifier_system if rtype == "Patient" else NPI_SYSTEM
            found = identifier_of(resource, preferred)
            if found is not None:
                register_sensitive(found.value)
        seen[reference] = found
        return found

    return resolve
