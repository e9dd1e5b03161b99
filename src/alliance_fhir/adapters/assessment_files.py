"""Assessments from any supported file, chosen by suffix (and, for JSON, by content).

Here, above the domain, because it combines the domain's own formats (YAML/JSON records,
CSV) with FHIR QuestionnaireResponse JSON, which only the adapters read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alliance_fhir.adapters.response_files import (
    Imported,
    ReferenceResolver,
    read_questionnaire_responses,
)
from alliance_fhir.assessments.sources import CsvColumnMap, read_csv, read_records
from alliance_fhir.defaults import DEFAULT_CANONICAL_BASE, DEFAULT_NAMESPACE
from alliance_fhir.exceptions import InvalidInputError, Problem
from alliance_fhir.inputs import load_document
from alliance_fhir.instruments.schema import Instrument

__all__ = ["Imported", "read_assessments"]


def read_assessments(
    path: Path,
    *,
    instruments: Iterable[Instrument] = (),
    csv_map: CsvColumnMap | None = None,
    canonical_base: str = DEFAULT_CANONICAL_BASE,
    namespace: str = DEFAULT_NAMESPACE,
    resolve_reference: ReferenceResolver | None = None,
) -> Imported:
    """Assessments from any supported file, chosen by its suffix (and, for JSON, content)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return Imported(*read_csv(path, csv_map), [])
    if suffix == ".json":
        try:
            data, _ = load_document(path)
        except InvalidInputError as exc:
            return Imported([], exc.problems, [])
        if isinstance(data, dict) and data.get("resourceType") in (
            "QuestionnaireResponse",
            "Bundle",
        ):
            return read_questionnaire_responses(
                path,
                instruments,
                canonical_base=canonical_base,
                namespace=namespace,
                resolve_reference=resolve_reference,
            )
        return Imported(*read_records(path), [])
    if suffix in (".yaml", ".yml"):
        return Imported(*read_records(path), [])
    problem = Problem(str(path), "", "unsupported file type (expected .yaml, .json or .csv)")
    return Imported([], [problem], [])
