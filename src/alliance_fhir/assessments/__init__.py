"""Assessments: one person's answers to one instrument at one time.

``model`` holds the domain record, ``check`` compares its answers with the instrument,
``sources`` imports records from YAML/JSON and CSV files (FHIR QuestionnaireResponse files
are read above the domain, in ``alliance_fhir.adapters.assessment_files``).
"""

from alliance_fhir.assessments.check import (
    check_answers,
    check_assessment,
    prepare,
    score_assessment,
)
from alliance_fhir.assessments.model import Assessment, Identifier
from alliance_fhir.assessments.sources import (
    CsvColumnMap,
    load_csv_map,
    read_csv,
    read_records,
)

__all__ = [
    "Assessment",
    "CsvColumnMap",
    "Identifier",
    "check_answers",
    "check_assessment",
    "load_csv_map",
    "prepare",
    "read_csv",
    "read_records",
    "score_assessment",
]
