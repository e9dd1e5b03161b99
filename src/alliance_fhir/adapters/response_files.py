"""Assessments from QuestionnaireResponse JSON files: one resource, or a Bundle of them.

Each response is read by :mod:`alliance_fhir.adapters.response` (the reader the monitor uses
too). A file names people by ``identifier``; a bare ``reference`` needs a
:data:`ReferenceResolver`. A clinician author becomes the practitioner; a patient or related
person who authored their own check-in does not. Answers to items the instrument does not
have are left out and reported as a note (``ignored: ...``), never silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from alliance_fhir.adapters.response import (
    Origin,
    instruments_by_url,
    read_questionnaire_response,
)
from alliance_fhir.assessments.model import Assessment, Identifier
from alliance_fhir.assessments.sources import dedupe_keys, register_assessment
from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.inputs import load_document
from alliance_fhir.instruments.schema import Instrument

__all__ = ["FilePeople", "Imported", "ReferenceResolver", "read_questionnaire_responses"]

#: Turns a FHIR reference (``Patient/123``) into the business identifier it stands for.
ReferenceResolver = Callable[[str], Identifier | None]


class Imported(NamedTuple):
    """What a file gave: its assessments, its problems, and notes (what was left out)."""

    assessments: list[Assessment]
    problems: list[Problem]
    notes: list[str]


class FilePeople:
    """People in a file: by ``identifier``, or by ``reference`` through a resolver."""

    def __init__(self, resolve: ReferenceResolver | None = None) -> None:
        self.resolve = resolve

    def patient(self, qr: Mapping[str, Any], origin: Origin) -> Identifier:
        subject = self._identifier(origin, "subject", qr.get("subject"))
        if subject is None:
            raise origin.fail("subject", "missing the patient")
        return subject

    def practitioner(
        self, qr: Mapping[str, Any], origin: Origin, patient: Identifier | None
    ) -> Identifier | None:
        author = qr.get("author")
        if not isinstance(author, dict):
            return None
        kind = author.get("type") or str(author.get("reference") or "").split("/", 1)[0]
        if kind in ("Patient", "RelatedPerson"):
            return None
        ident = self._identifier(origin, "author", author)
        return None if ident == patient else ident

    def _identifier(self, origin: Origin, field: str, ref: Any) -> Identifier | None:
        if not isinstance(ref, dict):
            return None
        ident = ref.get("identifier")
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            try:
                return Identifier(system=ident["system"], value=ident["value"])
            except ValidationError as exc:
                raise origin.fail(field, "identifier needs a URI system and a value") from exc
        reference = ref.get("reference")
        if isinstance(reference, str) and reference:
            if self.resolve is None:
                raise origin.fail(
                    field,
                    f"{field} is only a reference; include {field}.identifier "
                    "or import with a reference resolver",
                )
            resolved = self.resolve(reference)
            if resolved is None:
                raise origin.fail(field, f"cannot resolve the {field} reference")
            return resolved
        return None


def read_questionnaire_responses(
    path: Path,
    instruments: Iterable[Instrument],
    *,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    namespace: str = DEFAULT_NAMESPACE,
    resolve_reference: ReferenceResolver | None = None,
) -> Imported:
    """Assessments from a QuestionnaireResponse JSON file (one resource or a Bundle)."""
    try:
        data, pos = load_document(path)
    except InvalidInputError as exc:
        return Imported([], exc.problems, [])
    source = str(path)
    by_url = instruments_by_url(instruments, canonical_base)
    people = FilePeople(resolve_reference)
    resources: list[tuple[tuple[int | str, ...], Any]] = []
    if isinstance(data, dict) and data.get("resourceType") == "Bundle":
        for i, entry in enumerate(data.get("entry") or []):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            resources.append((("entry", i, "resource"), resource))
    else:
        resources.append(((), data))
    problems: list[Problem] = []
    notes: list[str] = []
    parsed: list[tuple[Assessment, Problem | None]] = []
    for where, resource in resources:
        origin = Origin.file(source, pos, where)
        try:
            read = read_questionnaire_response(
                resource, origin, by_url, people, namespace=namespace
            )
        except InvalidInputError as exc:
            problems.extend(exc.problems)
            continue
        assessment = read.assessment
        register_assessment(assessment, read.free_text)
        if read.ignored_link_ids:
            reason = (
                f"assessment {assessment.key}: answers to items {read.instrument.id} does not "
                f"have were left out: {', '.join(read.ignored_link_ids)}"
            )
            notes.append(f"ignored: {origin.problem(('item',), 'item', reason)}")
        parsed.append((assessment, origin.problem((), "identifier", "")))
    records, dup = dedupe_keys(parsed)
    return Imported(records, problems + dup, notes)
