"""A changed source file's unchanged records are not mapped again (issue #15, item 5).

When one answer in a CSV of 250 clients changes, the file's sha256 changes and the whole
file is read again (``app.fingerprints``); reading is cheap, but checking, scoring, mapping
and validating its other records is what a full plan costs. So each assessment of a file
read is remembered with a *source digest*: the record as the reader parsed it (defaults
applied, answers, patient, clinician, instrument, dates, status), its place in the file
left out. A record of a file read again is reused, not mapped, when all of these hold:

* the file's stored row was written under this run's context hash (``decide`` keeps it as
  ``FileDecision.known`` only then): instruments, overlays, namespace and tool version are
  what they were, so the same parsed record maps to the same content;
* its digest equals the stored one for its key in that same file (a record moved from
  another file is mapped again: it plans ``unchanged`` anyway);
* it gave both its records last time (its response and its score): a record that gave a
  note (not scored, in progress) or a problem is mapped again, so the note or problem is
  said again;
* each of those records is ``synced`` with its stored content hash (no dead letter).

Its stored records are kept for the file's new row with the record's line now (a record
that moved lines is reused; the "duplicate of" message names where it is now). Records
deleted from the file are simply not in the new row. Duplicate keys are found by the reader
before this step, so a duplicate is a problem, never reused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from alliance_fhir.app.fingerprints import FileDecision, SourceIndex, plain_records
from alliance_fhir.assessments import Assessment
from alliance_fhir.sync.state.sources import SourceRecord

__all__ = ["Reuse", "reuse_records", "source_digest"]

#: What the digest leaves out: where the record is, not what it says.
_PLACE = frozenset({"source", "line", "answer_lines"})
#: The records an assessment gives when it gave no note.
_BOTH = frozenset({"assessment", "score"})


def source_digest(assessment: Assessment) -> str:
    """The digest of a parsed record's content, its place in its file left out."""
    text = assessment.model_dump_json(exclude=set(_PLACE))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


@dataclass
class Reuse:
    """One read file's assessments split into those to map and those reused."""

    to_map: list[Assessment]
    #: The reused assessments' stored records (their lines as read now).
    records: list[SourceRecord] = field(default_factory=list)
    #: Assessment key -> source digest, of every assessment read.
    digests: dict[str, str] = field(default_factory=dict)


def reuse_records(
    found: Sequence[Assessment], decision: FileDecision | None, sources: SourceIndex | None
) -> Reuse:
    """Split ``found`` (one file's assessments, duplicates already taken out) into those to
    map and those reused (see the module docstring). Without ``sources`` nothing is
    remembered, so no digest is computed."""
    if sources is None or decision is None:
        return Reuse(list(found))
    digests = {a.key: source_digest(a) for a in found}
    known = decision.known
    if known is None or not known.record_sources:
        return Reuse(list(found), digests=digests)
    stored: dict[str, list[tuple[str, str]]] = {}
    for kind, key, content, _ in plain_records(known.records):
        stored.setdefault(key, []).append((kind, content))
    synced = sources.synced()
    out = Reuse([], digests=digests)
    for assessment in found:
        key = assessment.key
        records = stored.get(key, [])
        if (
            known.record_sources.get(key) == digests[key]
            and {kind for kind, _ in records} == _BOTH
            and len(records) == len(_BOTH)
            and all(synced.hash_of(kind, key) == content for kind, content in records)
        ):
            out.records.extend(
                (kind, key, content, assessment.line if kind == "assessment" else None)
                for kind, content in records
            )
        else:
            out.to_map.append(assessment)
    return out
