"""Our shipped resources, validated once when they were made: a first sync skips their models.

A sync validates our CodeSystem and Questionnaires with the R4B models before sending them.
For the default instruments that is the same few resources, byte for byte, on every machine,
and most of its cost is fhir.resources building those models on first use: ~0.3 s before a
first sync's first bundle, while the server waits. ``make prevalidated`` validates them once
with the models (every wording choice, default settings) and keeps here the sha256 of each
one's stable JSON with the fhir.resources version that accepted it.

A resource whose digest is listed was accepted by that version of the models; under any other
version the list is not used. Anything else (an overlay, a clinic's own instrument or
canonical base) is validated by the models as before. ``tests/unit/adapters`` checks that the
list names exactly what the shipped definitions build, each one accepted by the models.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

from alliance_fhir.versions import installed

#: The list, next to this module (packaged with it).
LIST = Path(__file__).with_name("prevalidated.json")


def digest(text: str) -> str:
    """The digest a resource is listed under: sha256 of its stable JSON (``fhirjson.dumps``)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def models_version() -> str | None:
    return installed("fhir.resources")


@cache
def listed() -> frozenset[str]:
    """The digests the installed models are known to accept (none under another version)."""
    try:
        data = json.loads(LIST.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return frozenset()  # no list (a trimmed install): everything goes through the models
    version = models_version()
    if version is None or not isinstance(data, dict) or data.get("fhir.resources") != version:
        return frozenset()
    found = data.get("digests")
    if not isinstance(found, list):
        return frozenset()
    return frozenset(d for d in found if isinstance(d, str))
