"""The bad-input corpus, generated: every case is one file next to a good one.

A case names the file it writes, its bytes, and the one problem it must yield: the line (or
None when the reason is about the whole file), the field, a fragment of the reason, and the
record key it quarantines (None when the whole file is refused). Huge files are not written:
the tests lower ``alliance_fhir.inputs.MAX_INPUT_BYTES`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

MRN = "http://example-clinic.org/mrn"

GOOD_ASSESSMENT = """\
defaults:
  patient: {system: http://example-clinic.org/mrn, value: MRN-9001}
assessments:
  - key: good-1
    instrument: srs
    authored: 2024-01-08T16:52:00-05:00
    answers: {q1: "9.1", q2: "9.4", q3: "9.1", q4: "9.6"}
"""

CSV_HEADER = (
    "record_id,instrument,instrument_version,authored,status,session,client_mrn,"
    "clinician_npi,item.q1,item.q2,item.q3,item.q4\n"
)


def srs(key: str, answers: str = '{q1: "9.1", q2: "9.4", q3: "9.1", q4: "9.6"}') -> str:
    return GOOD_ASSESSMENT.replace("good-1", key).replace(
        '{q1: "9.1", q2: "9.4", q3: "9.1", q4: "9.6"}', answers
    )


@dataclass(frozen=True)
class Case:
    id: str
    filename: str
    content: bytes
    line: int | None
    field: str
    reason: str
    quarantined: str | None = None
    path: str | None = None


def _u(text: str) -> bytes:
    return text.encode("utf-8")


ASSESSMENT_CASES: list[Case] = [
    Case(
        "truncated-yaml",
        "truncated.yaml",
        _u(srs("trunc-1")[:150]),
        6,
        "authored",
        "datetime",
        "trunc-1",
        "assessments[0].authored",
    ),
    Case(
        "malformed-yaml",
        "malformed.yaml",
        _u("assessments:\n  - key: x\n    answers: {q1: [\n"),
        4,
        "",
        "not valid YAML/JSON",
    ),
    Case("yaml-tab-indent", "tabs.yaml", _u("assessments:\n\t- key: x\n"), 2, "", "'\\t'"),
    Case(
        "duplicate-yaml-key",
        "dupkey.yaml",
        _u(srs("dk-1").replace("    instrument: srs\n", "    instrument: srs\n    key: dk-2\n")),
        6,
        "key",
        "duplicate key",
    ),
    Case(
        "truncated-json",
        "truncated.json",
        _u('{"key": "j-1", "instrument": "srs",'),
        1,
        "",
        "not valid JSON",
    ),
    Case(
        "json-not-a-record",
        "scalar.json",
        _u("[42]"),
        1,
        "",
        "a record must be a mapping",
    ),
    Case("empty-yaml", "empty.yaml", b"", 1, "", "the document is empty"),
    Case(
        "latin-1",
        "latin1.yaml",
        srs("lat-1").replace("MRN-9001", "MRN-9001\u00e9").encode("latin-1"),
        2,
        "",
        "not UTF-8 text",
    ),
    Case(
        "utf-16-with-bom",
        "utf16.yaml",
        srs("u16-1").encode("utf-16"),
        1,
        "",
        "not UTF-8 text",
    ),
    Case(
        "unknown-instrument",
        "unknown.yaml",
        _u(srs("unk-1").replace("instrument: srs", "instrument: no-such-thing")),
        4,
        "instrument",
        "unknown instrument 'no-such-thing'",
        "unk-1",
    ),
    Case(
        "out-of-range",
        "range.yaml",
        _u(srs("rng-1", '{q1: "11.5", q2: "9.4", q3: "9.1", q4: "9.6"}')),
        7,
        "answers.q1",
        "11.5 is outside 0-10",
        "rng-1",
    ),
    Case(
        "negative",
        "negative.yaml",
        _u(srs("neg-1", "{q1: -1, q2: 9.4, q3: 9.1, q4: 9.6}")),
        7,
        "answers.q1",
        "outside 0-10",
        "neg-1",
    ),
    Case(
        "mistyped-list",
        "list.yaml",
        _u(srs("typ-1", '{q1: [1, 2], q2: "9.4", q3: "9.1", q4: "9.6"}')),
        7,
        "answers",
        "expected one code, number or text",
        "typ-1",
    ),
    Case(
        "mistyped-word",
        "word.yaml",
        _u(srs("wrd-1", '{q1: "nine", q2: "9.4", q3: "9.1", q4: "9.6"}')),
        7,
        "answers.q1",
        "expected a number from 0 to 10, got text",
        "wrd-1",
    ),
    Case(
        "unknown-item",
        "item.yaml",
        _u(srs("itm-1", '{q1: "9.1", q2: "9.4", q3: "9.1", q4: "9.6", q9: "1"}')),
        7,
        "answers.q9",
        "q9",
        "itm-1",
    ),
    Case(
        "no-timezone",
        "notz.yaml",
        _u(srs("tz-1").replace("16:52:00-05:00", "16:52:00")),
        6,
        "authored",
        "timezone",
        "tz-1",
        "assessments[0].authored",
    ),
    Case(
        "impossible-date",
        "date.yaml",
        _u(srs("dt-1").replace("2024-01-08T", "2024-02-30T")),
        6,
        "authored",
        "not a valid value: day is out of range for month",
        "dt-1",
        "assessments[0].authored",
    ),
    Case(
        "nested-too-deeply",
        "deep.yaml",
        _u("[" * 5000),
        None,
        "",
        "nested too deeply",
    ),
    Case(
        "json-nested-too-deeply",
        "deep.json",
        _u("[" * 5000 + "]" * 5000),
        None,
        "",
        "nested too deeply",
    ),
    Case(
        "alias-bomb",
        "bomb.yaml",
        _u(
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n"
                for p, n in zip("abcdef", "bcdefg", strict=True)
            )
        ),
        None,
        "",
        "expands to more than",
    ),
    Case(
        "control-character",
        "ctrl.yaml",
        _u(srs("ctl-1").replace("MRN-9001", "MRN-9001\x1b[31m")),
        2,
        "",
        "character 0x001b is not allowed",
    ),
    Case(
        "python-tag",
        "tag.yaml",
        _u("key: !!python/object:os.system echo\n"),
        1,
        "",
        "could not determine a constructor",
    ),
    Case(
        "duplicate-record",
        "dup.yaml",
        _u(
            srs("dup-1")
            + "  - key: dup-1\n    instrument: srs\n    authored: 2024-01-09T16:52:00-05:00\n"
            '    answers: {q1: "9.1", q2: "9.4", q3: "9.1", q4: "9.6"}\n'
        ),
        8,
        "key",
        "duplicate key 'dup-1'",
        None,
        "assessments[1].key",
    ),
    Case(
        "duplicate-of-other-file",
        "again.yaml",
        _u(srs("good-1")),
        4,
        "key",
        "duplicate",
        None,
    ),
    Case(
        "hostile-key-html",
        "html.yaml",
        _u(srs("<script>alert(1)</script>")),
        4,
        "key",
        "should match pattern",
        None,
        "assessments[0].key",
    ),
    Case(
        "hostile-key-sql",
        "sql.yaml",
        _u(
            srs("x'; DROP TABLE resources; --")
            .replace("key: x'", "key: \"x'")
            .replace("--\n", '--"\n')
        ),
        4,
        "key",
        "should match pattern",
        None,
    ),
    Case(
        "hostile-key-rtl-override",
        "rtl.yaml",
        _u(srs("abc\u202edcba")),
        4,
        "key",
        "should match pattern",
        None,
    ),
    Case(
        "unknown-top-level-field",
        "extra.yaml",
        _u(srs("ext-1") + "surprise: 1\n"),
        8,
        "surprise",
        "unknown top-level field",
        None,
    ),
    Case(
        "unsupported-type",
        "notes.txt",
        _u("hello"),
        None,
        "",
        "unsupported file type",
    ),
    # CSV
    Case(
        "csv-short-row",
        "short.csv",
        _u(CSV_HEADER + "c-1,srs,1.0.0,2024-01-08T16:51:00-05:00,completed,1,MRN-1001\n"),
        2,
        "",
        "7 cells but 12 columns",
    ),
    Case(
        "csv-unterminated-quote",
        "quote.csv",
        _u(CSV_HEADER + 'c-2,srs,1.0.0,"2024-01-08T16:51:00-05:00,completed,1,MRN-1,,9,9,9,9\n'),
        2,
        "",
        "CSV",
    ),
    Case(
        "csv-missing-columns",
        "cols.csv",
        _u("record_id,instrument\nc-3,srs\n"),
        1,
        "authored, client_mrn",
        "required column(s) missing",
    ),
    Case("csv-empty", "empty.csv", b"", 1, "", "the file is empty"),
    Case(
        "csv-out-of-range",
        "range.csv",
        _u(CSV_HEADER + "c-4,srs,1.0.0,2024-01-08T16:51:00-05:00,completed,1,MRN-1001,,99,9,9,9\n"),
        2,
        "answers.q1",
        "outside 0-10",
        "c-4",
    ),
    Case(
        "csv-mistyped-session",
        "session.csv",
        _u(CSV_HEADER + "c-5,srs,1.0.0,2024-01-08T16:51:00-05:00,completed,two,MRN-1,,9,9,9,9\n"),
        2,
        "session",
        "integer",
        "c-5",
    ),
    Case(
        "csv-latin-1",
        "latin1.csv",
        (CSV_HEADER + "c-6,srs,,2024-01-08T16:51:00-05:00,,,MRN-\u00e9,,9,9,9,9\n").encode(
            "latin-1"
        ),
        2,
        "",
        "not UTF-8 text",
    ),
]
