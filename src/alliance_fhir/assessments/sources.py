"""Importers: assessment records from YAML/JSON record files and CSV.

Every importer returns ``(assessments, problems)``. A bad record becomes Problems (file, line or
JSON path, field, reason) and the others carry on; a key seen twice in one batch is a Problem
for the second record. A file that cannot be read at all (not UTF-8, not YAML, no header) is a
single Problem and no records.

Record files (``.yaml``/``.yml``/``.json``)
    One record (a mapping with ``key``), a list of records, or a mapping with ``assessments:``
    (a list) and optional ``defaults:`` (fields every record of the file shares, e.g. the
    patient; a record's own fields win). Fields are those of :class:`Assessment`.

CSV
    One row per assessment; the header names columns, and a column map
    (``mappings/sources/assessments-csv.yaml`` by default, see :class:`CsvColumnMap`) says
    which column is which field. An empty cell is an unanswered item / an absent field.

FHIR QuestionnaireResponse JSON is read above the domain, by
``alliance_fhir.adapters.response_files``; ``alliance_fhir.adapters.assessment_files`` picks
the importer for a file.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alliance_fhir.assessments.model import Assessment, Identifier
from alliance_fhir.exceptions import ConfigError, InvalidInputError, Problem
from alliance_fhir.inputs import Positions, load_document, problems_from_validation, read_text
from alliance_fhir.log import register_sensitive
from alliance_fhir.resources import bundled_mappings

__all__ = [
    "CsvColumnMap",
    "Result",
    "dedupe_keys",
    "load_csv_map",
    "read_csv",
    "read_records",
    "register_assessment",
]

Result = tuple[list[Assessment], list[Problem]]


# -- shared ------------------------------------------------------------------------------


def register_assessment(assessment: Assessment, free_text: Iterable[str] = ()) -> None:
    """Mask the patient identifier and free-text answers in every later log line.

    Numbers (choice codes, visual-analogue marks read from CSV as text) are not free text:
    masking them would garble unrelated numbers in logs.
    """
    register_sensitive(assessment.patient.value, *(t for t in free_text if not _numeric(t)))


class _Sensitive:
    """One file's values to mask, registered once when the file is read (not per record):
    the patients' identifiers and the distinct answer texts, numbers left out as
    :func:`register_assessment` leaves them out. Records repeat the same few patients and
    answers, so this is a set update per record instead of a registration per record."""

    def __init__(self) -> None:
        self._patients: set[str] = set()
        self._answers: set[str | int | float] = set()

    def add(self, assessment: Assessment) -> None:
        self._patients.add(assessment.patient.value)
        self._answers.update(assessment.answers.values())

    def register(self) -> None:
        texts = (t for t in self._answers if isinstance(t, str) and not _numeric(t))
        register_sensitive(*self._patients, *texts)


class _People:
    """Identifiers this file's records validated, by (system, value) as written: records
    repeat one patient and clinician, so each is validated once and then shared (the model
    is frozen). A pair not seen valid yet is left to the record's own validation, so every
    message stays the record's."""

    def __init__(self) -> None:
        self._valid: dict[tuple[str, str], Identifier] = {}

    @staticmethod
    def _pair(raw: Any) -> tuple[str, str] | None:
        if type(raw) is not dict or len(raw) != 2:
            return None
        system, value = raw.get("system"), raw.get("value")
        return (system, value) if type(system) is str and type(value) is str else None

    def known(self, raw: Any) -> Any:
        """The identifier ``raw`` was validated to before, or ``raw`` itself."""
        pair = self._pair(raw)
        return raw if pair is None else self._valid.get(pair, raw)

    def learn(self, raw: Any, identifier: Identifier | None) -> None:
        """``raw`` was validated to ``identifier`` (when it is a plain pair, keep it)."""
        pair = self._pair(raw)
        if pair is not None and identifier is not None:
            self._valid[pair] = identifier


def _numeric(text: str) -> bool:
    if text.isascii() and text.isdigit():  # a choice code: no float() (and no exception)
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def dedupe_keys(items: list[tuple[Assessment, Problem | None]]) -> Result:
    """Drop a record whose key an earlier record of the batch already used (a Problem)."""
    if len({assessment.key for assessment, _ in items}) == len(items):
        return [assessment for assessment, _ in items], []  # no key used twice: all kept
    seen: dict[str, str] = {}
    out: list[Assessment] = []
    problems: list[Problem] = []
    for assessment, dup_problem in items:
        if assessment.key in seen:
            assert dup_problem is not None
            problems.append(
                Problem(
                    dup_problem.location,
                    dup_problem.field,
                    f"duplicate key {assessment.key!r}: already used at {seen[assessment.key]}",
                    line=dup_problem.line,
                    path=dup_problem.path,
                )
            )
            continue
        seen[assessment.key] = assessment.where
        out.append(assessment)
    return out, problems


# -- record files ------------------------------------------------------------------------


def read_records(path: Path) -> Result:
    """Assessments from a YAML or JSON record file."""
    source = str(path)
    try:
        data, pos = load_document(path)
    except InvalidInputError as exc:
        return [], exc.problems
    defaults: Mapping[str, Any] = {}
    records: list[tuple[tuple[int | str, ...], Any]]
    if isinstance(data, list):
        records = [((i,), r) for i, r in enumerate(data)]
    elif isinstance(data, dict) and "assessments" in data:
        extra = sorted(set(data) - {"assessments", "defaults"})
        if extra:
            return [], [pos.problem((extra[0],), extra[0], "unknown top-level field")]
        listed = data["assessments"]
        if not isinstance(listed, list):
            return [], [pos.problem(("assessments",), "assessments", "must be a list")]
        raw_defaults = data.get("defaults") or {}
        if not isinstance(raw_defaults, dict):
            return [], [pos.problem(("defaults",), "defaults", "must be a mapping")]
        defaults = raw_defaults
        records = [(("assessments", i), r) for i, r in enumerate(listed)]
    elif isinstance(data, dict):
        records = [((), data)]
    else:
        return [], [Problem(source, "", "expected a record, a list, or `assessments:`", line=1)]

    problems: list[Problem] = []
    parsed: list[tuple[Assessment, tuple[int | str, ...]]] = []
    sensitive = _Sensitive()
    people = _People()
    for where, record in records:
        if not isinstance(record, dict):
            problems.append(pos.problem(where, "", "a record must be a mapping"))
            continue
        merged = {**defaults, **record}
        line = pos.line(where)
        answers, lines = record.get("answers"), pos.lines
        answer_lines: dict[str, int] = {}
        if isinstance(answers, dict):
            at_answers = (*where, "answers")
            kept = pos.key_lines(at_answers)
            answer_lines = (
                dict(kept)
                if kept is not None
                else {
                    str(k): at for k in answers if (at := lines.get((*at_answers, k))) is not None
                }
            )
        data = {**merged, "source": source, "line": line, "answer_lines": answer_lines}
        for who in ("patient", "practitioner"):
            if who in data:
                data[who] = people.known(data[who])
        try:
            assessment = Assessment.model_validate(data)
        except ValidationError as exc:
            problems.extend(_record_problems(exc, record, defaults, pos, where))
            continue
        people.learn(merged.get("patient"), assessment.patient)
        people.learn(merged.get("practitioner"), assessment.practitioner)
        sensitive.add(assessment)
        parsed.append((assessment, where))
    sensitive.register()
    # a record's key Problem is made only for keys used twice (the only ones it words)
    counts = Counter(assessment.key for assessment, _ in parsed)
    records_ok, dup = dedupe_keys(
        [(a, pos.problem((*w, "key"), "key", "") if counts[a.key] > 1 else None) for a, w in parsed]
    )
    return records_ok, problems + dup


def _record_problems(
    exc: ValidationError,
    record: Mapping[str, Any],
    defaults: Mapping[str, Any],
    pos: Positions,
    where: tuple[int | str, ...],
) -> list[Problem]:
    """Problems of one record; a field inherited from ``defaults:`` is reported there."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not _union_tag(p))
        top = loc[0] if loc else ""
        base = ("defaults",) if top not in record and top in defaults else where
        field = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
        reason = str(err["msg"]).removeprefix("Value error, ")
        if top == "authored" and "timezone" in reason:
            reason += " (write an offset, e.g. 2024-03-04T17:00:00-05:00)"
        problems.append(pos.problem((*base, *loc), field, reason))
    return problems


def _union_tag(part: int | str) -> bool:
    # pydantic puts the member type of a union ("str", "function-after[...]") into loc.
    return isinstance(part, str) and (
        "[" in part or part.startswith("function-") or part in ("str", "int", "float")
    )


# -- CSV ---------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvIdentifierColumn(_Strict):
    """An identifier read from a column.

    A cell ``system|value`` carries its own system; a bare value takes ``system`` (a fixed
    default) or the cell of ``system_column``.
    """

    column: str
    system: str | None = None
    system_column: str | None = None

    @model_validator(mode="after")
    def _one_system(self) -> CsvIdentifierColumn:
        if self.system is not None and self.system_column is not None:
            raise ValueError("give system or system_column, not both")
        return self


class CsvColumns(_Strict):
    key: str
    instrument: str
    instrument_version: str | None = None
    authored: str
    status: str | None = None
    session: str | None = None


class CsvAnswers(_Strict):
    """Answer columns: every column named ``{prefix}{linkId}``, plus explicit ``columns``."""

    prefix: str | None = "item."
    columns: dict[str, str] = Field(default_factory=dict, description="column -> linkId")


class CsvColumnMap(_Strict):
    """Which CSV column holds which field of an Assessment (see assessments-csv.yaml)."""

    delimiter: str = Field(default=",", min_length=1, max_length=1)
    columns: CsvColumns
    patient: CsvIdentifierColumn
    practitioner: CsvIdentifierColumn | None = None
    answers: CsvAnswers = CsvAnswers()
    ignore: list[str] = Field(default_factory=list, description="columns to skip silently")


def load_csv_map(path: Path | None = None) -> CsvColumnMap:
    """The CSV column map at ``path`` (default: the shipped ``assessments-csv.yaml``)."""
    path = path or bundled_mappings() / "sources" / "assessments-csv.yaml"
    data, pos = load_document(path)
    try:
        return CsvColumnMap.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(str(p) for p in problems_from_validation(exc, pos))) from exc


def read_csv(path: Path, column_map: CsvColumnMap | None = None) -> Result:
    """Assessments from a CSV file, one per row."""
    source = str(path)
    cmap = column_map or load_csv_map()
    try:
        text = read_text(path)
    except InvalidInputError as exc:
        return [], exc.problems
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=cmap.delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return [], [Problem(source, "", "the file is empty", line=1)]
    except csv.Error as exc:
        return [], [Problem(source, "", f"not valid CSV: {exc}", line=1)]
    header = [h.strip() for h in header]

    fields: dict[str, str] = {}  # column -> field name in an Assessment dict
    for name, column in cmap.columns.model_dump().items():
        if column is not None:
            fields[column] = name
    answer_cols: dict[str, str] = dict(cmap.answers.columns)
    known = set(fields) | set(answer_cols) | set(cmap.ignore)
    for ident in (cmap.patient, cmap.practitioner):
        if ident is not None:
            known |= {ident.column} | ({ident.system_column} if ident.system_column else set())
    problems: list[Problem] = []
    for column in header:
        if column in known:
            continue
        prefix = cmap.answers.prefix
        if prefix and column.startswith(prefix) and len(column) > len(prefix):
            answer_cols[column] = column[len(prefix) :]
        else:
            problems.append(Problem(source, column, "column not in the column map", line=1))
    required = [cmap.columns.key, cmap.columns.instrument, cmap.columns.authored]
    required.append(cmap.patient.column)
    missing = [c for c in required if c not in header]
    if missing:
        problems.append(
            Problem(source, ", ".join(missing), "required column(s) missing from header", line=1)
        )
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        problems.append(Problem(source, ", ".join(dupes), "duplicate column(s)", line=1))
    if problems:
        return [], problems

    parsed: list[Assessment] = []
    sensitive = _Sensitive()
    people = _People()
    line = 2
    while True:
        start = line
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(source, "", f"not valid CSV: {exc}", line=start))
            break
        line = reader.line_num + 1
        if not "".join(row).strip():  # every cell blank
            continue
        if len(row) != len(header):
            problems.append(
                Problem(source, "", f"{len(row)} cells but {len(header)} columns", line=start)
            )
            continue
        cells = dict(zip(header, map(str.strip, row), strict=True))
        result = _csv_record(cells, cmap, fields, answer_cols, source, start, people)
        if isinstance(result, list):
            problems.extend(result)
            continue
        sensitive.add(result)
        parsed.append(result)
    sensitive.register()
    # a row's key Problem is made only for keys used twice (the only ones it words)
    counts = Counter(assessment.key for assessment in parsed)
    records, dup = dedupe_keys(
        [
            (a, Problem(source, cmap.columns.key, "", line=a.line) if counts[a.key] > 1 else None)
            for a in parsed
        ]
    )
    return records, problems + dup


def _csv_identifier(
    cells: Mapping[str, str], spec: CsvIdentifierColumn | None
) -> dict[str, str] | None:
    if spec is None or not cells.get(spec.column):
        return None
    cell = cells[spec.column]
    if "|" in cell:
        system, _, value = cell.partition("|")
        return {"system": system, "value": value}
    if spec.system_column is not None:
        return {"system": cells.get(spec.system_column, ""), "value": cell}
    return {"system": spec.system or "", "value": cell}


def _csv_record(
    cells: Mapping[str, str],
    cmap: CsvColumnMap,
    fields: Mapping[str, str],
    answer_cols: Mapping[str, str],
    source: str,
    line: int,
    people: _People,
) -> Assessment | list[Problem]:
    record: dict[str, Any] = {
        name: cells[col] for col, name in fields.items() if cells.get(col, "") != ""
    }
    patient = _csv_identifier(cells, cmap.patient)
    record["patient"] = people.known(patient)
    practitioner = _csv_identifier(cells, cmap.practitioner)
    if practitioner is not None:
        record["practitioner"] = people.known(practitioner)
    record["answers"] = {
        link_id: cells[col] for col, link_id in answer_cols.items() if cells.get(col, "") != ""
    }
    record["source"] = source
    record["line"] = line
    try:
        assessment = Assessment.model_validate(record)
    except ValidationError as exc:
        by_field = {v: k for k, v in fields.items()}
        by_link = {v: k for k, v in answer_cols.items()}
        problems = []
        for err in exc.errors(include_url=False):
            loc = err["loc"]
            top = str(loc[0]) if loc else ""
            if top in ("patient", "practitioner"):
                spec = cmap.patient if top == "patient" else cmap.practitioner
                column = spec.column if spec is not None else top
                if len(loc) > 1 and loc[1] == "system" and spec and spec.system_column:
                    column = spec.system_column
            elif top == "answers" and len(loc) > 1:
                column = by_link.get(str(loc[1]), f"answers.{loc[1]}")
            elif top == "answers":
                column = "answers"
            else:
                column = by_field.get(top, top)
            reason = str(err["msg"]).removeprefix("Value error, ")
            if top == "authored" and "timezone" in reason:
                reason += " (write an offset, e.g. 2024-03-04T17:00:00-05:00)"
            problems.append(Problem(source, column, reason, line=line))
        return problems
    people.learn(patient, assessment.patient)
    people.learn(practitioner, assessment.practitioner)
    return assessment
