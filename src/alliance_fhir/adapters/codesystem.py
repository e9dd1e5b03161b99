"""Our CodeSystem, and the one place that spells every code the adapters emit.

All our codes live in a single CodeSystem, ``{canonical_base}/CodeSystem/alliance-fhir-codes``.
Codes are qualified by the instrument id so two instruments can never collide:

===================  ==============================  ==========================================
what                 code                            used in
===================  ==============================  ==========================================
instrument           ``instrument.code.code``        Questionnaire.code
item                 ``{instrument}.{linkId}``       Questionnaire.item.code
total score          ``instrument.score_code.code``  score item code, Observation.code
subscale score       ``{instrument}.{subscale}``     score item code, Observation.component.code
answer (scale point) ``{instrument}.{scale}.{pt}``   answerOption / QR answer valueCoding
band                 ``{instrument}.band.{band}``    Observation.interpretation
below the cutoff     ``{instrument}.cutoff.below``   Observation.interpretation
===================  ==============================  ==========================================

Instrument definitions spell their ``code``/``score_code`` systems with the default base
(``http://alliance-fhir.org/fhir``); :func:`rebase` moves them to the configured base.
Codes in other systems (LOINC, ...) pass through untouched and are not listed here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from alliance_fhir.adapters import fhirjson
from alliance_fhir.adapters.identity import DEFAULT_CANONICAL_BASE
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.instruments.schema import (
    Instrument,
    InstrumentCoding,
    Item,
    Scale,
    ScalePoint,
    ScoreDef,
)

#: Path of our CodeSystem below the canonical base.
CODESYSTEM_PATH = "CodeSystem/alliance-fhir-codes"

#: Version of the CodeSystem's structure (the code scheme above); bump when it changes.
CODESYSTEM_VERSION = "1.0.0"

#: Prefix of the linkId of a hidden score item in our Questionnaires.
SCORE_LINK_PREFIX = "score."


def rebase(url: str, canonical_base: str = DEFAULT_CANONICAL_BASE) -> str:
    """``url`` with the default canonical base replaced by ``canonical_base``."""
    base = canonical_base.rstrip("/")
    default = DEFAULT_CANONICAL_BASE
    if url == default or url.startswith(default + "/"):
        return base + url[len(default) :]
    return url


def codes_system(canonical_base: str = DEFAULT_CANONICAL_BASE) -> str:
    """The URL of our CodeSystem under ``canonical_base``."""
    return f"{canonical_base.rstrip('/')}/{CODESYSTEM_PATH}"


def _is_ours(system: str, canonical_base: str) -> bool:
    return rebase(system, canonical_base) == codes_system(canonical_base)


def coding(
    source: InstrumentCoding,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    *,
    display: str | None = None,
) -> dict[str, Any]:
    """A FHIR Coding from an instrument's code, rebased when it is one of ours."""
    out: dict[str, Any] = {"system": rebase(source.system, canonical_base), "code": source.code}
    shown = source.display or display
    if shown:
        out["display"] = shown
    return out


def _our(code: str, display: str, canonical_base: str) -> dict[str, Any]:
    return {"system": codes_system(canonical_base), "code": code, "display": display}


def item_coding(
    instrument: Instrument, item: Item, canonical_base: str = DEFAULT_CANONICAL_BASE
) -> dict[str, Any]:
    return _our(f"{instrument.id}.{item.link_id}", item.label, canonical_base)


def score_coding(
    instrument: Instrument, score: ScoreDef, canonical_base: str = DEFAULT_CANONICAL_BASE
) -> dict[str, Any]:
    """Code of the total (the instrument's ``score_code``) or of one subscale."""
    if score.id == instrument.scoring.total.id:
        return coding(instrument.score_code, canonical_base, display=score.label)
    return _our(f"{instrument.id}.{score.id}", score.label, canonical_base)


def answer_code(instrument: Instrument, scale: Scale, point: ScalePoint) -> str:
    return f"{instrument.id}.{scale.id}.{point.code}"


def answer_coding(
    instrument: Instrument,
    scale: Scale,
    point: ScalePoint,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    *,
    display: str | None = None,
) -> dict[str, Any]:
    return _our(answer_code(instrument, scale, point), display or point.label, canonical_base)


def point_for_code(instrument: Instrument, scale: Scale, code: str) -> ScalePoint | None:
    """The scale point a code names: our qualified answer code, or the bare point code."""
    for point in scale.points:
        if code in (point.code, answer_code(instrument, scale, point)):
            return point
    return None


def band_coding(
    instrument: Instrument, band_code: str, label: str, canonical_base: str = DEFAULT_CANONICAL_BASE
) -> dict[str, Any]:
    return _our(f"{instrument.id}.band.{band_code}", label, canonical_base)


def below_cutoff_coding(
    instrument: Instrument, canonical_base: str = DEFAULT_CANONICAL_BASE
) -> dict[str, Any]:
    return _our(f"{instrument.id}.cutoff.below", "Below the instrument's cutoff", canonical_base)


def _concepts(instrument: Instrument, canonical_base: str) -> list[tuple[str, str, str]]:
    """(code, display, definition) of every code of ours this instrument uses."""
    out: list[tuple[str, str, str]] = []
    title = instrument.title
    if _is_ours(instrument.code.system, canonical_base):
        out.append(
            (instrument.code.code, instrument.code.display or title, f"The instrument {title}.")
        )
    total = instrument.scoring.total
    if _is_ours(instrument.score_code.system, canonical_base):
        display = instrument.score_code.display or total.label
        out.append((instrument.score_code.code, display, f"{title}: {total.label} ({total.id})."))
    for item in instrument.items:
        c = item_coding(instrument, item, canonical_base)
        out.append((c["code"], item.label, f"{title}: item {item.link_id}."))
    for sub in instrument.scoring.subscales:
        c = score_coding(instrument, sub, canonical_base)
        out.append((c["code"], sub.label, f"{title}: subscale {sub.id}."))
    for scale in instrument.scales:
        for point in scale.points:
            out.append(
                (
                    answer_code(instrument, scale, point),
                    point.label,
                    f"{title}: answer {point.code} of scale {scale.id} (value {point.value}).",
                )
            )
    for band in instrument.scoring.bands:
        c = band_coding(instrument, band.code, band.label, canonical_base)
        out.append((c["code"], band.label, f"{title}: total from {band.low:g} to {band.high:g}."))
    cutoff = instrument.scoring.cutoff
    if cutoff is not None:
        c = below_cutoff_coding(instrument, canonical_base)
        out.append((c["code"], c["display"], f"{title}: {cutoff.meaning}"))
    return out


def codesystem_for_instruments(
    instruments: Iterable[Instrument],
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    *,
    version: str = CODESYSTEM_VERSION,
    extra_concepts: Iterable[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Our CodeSystem resource (content ``complete``) listing every code the adapters use.

    Instruments are listed in id order, each in the order of :func:`_concepts`, so the output
    is byte-identical for the same set of instruments. ``extra_concepts`` (``code``,
    ``display``, ``definition``; e.g. ``monitoring.rule_concepts(rules)``) follow, in the
    order given. A code spelled twice with different meanings is a ConfigError.
    """
    seen: dict[str, tuple[str, str]] = {}
    concepts: list[dict[str, Any]] = []
    listed: list[tuple[str, str, str, str]] = [
        (instrument.id, code, display, definition)
        for instrument in sorted(instruments, key=lambda i: i.id)
        for code, display, definition in _concepts(instrument, canonical_base)
    ]
    listed.extend(
        ("extra concepts", c["code"], c["display"], c["definition"]) for c in extra_concepts
    )
    for owner, code, display, definition in listed:
        if code in seen:
            if seen[code][0] != display:
                raise ConfigError(
                    f"code {code!r} of {owner} is already defined as {seen[code][0]!r}"
                )
            continue
        seen[code] = (display, definition)
        concepts.append({"code": code, "display": display, "definition": definition})
    resource: dict[str, Any] = {
        "resourceType": "CodeSystem",
        "url": codes_system(canonical_base),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": codes_system(canonical_base)}],
        "version": version,
        "name": "AllianceFhirCodes",
        "title": "alliance-fhir codes",
        "status": "active",
        "publisher": "alliance-fhir",
        "description": (
            "Codes of the alliance-fhir instruments: instruments, items, scores, answers, "
            "interpretation bands."
        ),
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }
    return fhirjson.validate_shipped(resource, source="CodeSystem alliance-fhir-codes")
