"""Every PHI value of ``examples/`` (synthetic): what the PHI scans look for.

Names, identifiers and birth dates come from ``examples/clinic/people.json``; free text from
the assessment files (notes, "do differently") and the goal plans (the client's words,
framing, strengths, resources, what a goal addresses, notes, target details, titles) in YAML
and CSV. Names are matched as whole words ("Samir" does not hit "Samira"; "Okafor_Adaeze"
has both), free text anywhere.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_GOAL_TEXT_KEYS = {"title", "client_words", "clinician_framing", "text", "detail", "note"}
_GOAL_TEXT_LISTS = {"strengths", "resources"}
_CSV_TEXT = ("plan_title", "client_words", "clinician_framing", "addresses", "note")
_ASSESSMENT_TEXT_KEYS = {"do-differently", "notes"}


def people() -> set[str]:
    """Family and given names, patient identifiers, birth dates."""
    bundle = json.loads((EXAMPLES / "clinic" / "people.json").read_text(encoding="utf-8"))
    found: set[str] = set()
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for name in resource.get("name") or []:
            found.add(name["family"])
            found.update(name.get("given") or [])
        if resource["resourceType"] == "Patient":
            found.update(i["value"] for i in resource.get("identifier") or [])
        if resource.get("birthDate"):
            found.add(resource["birthDate"])
    return found


def _goal_text(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "measure":
                continue  # what is counted ("Morning walks per week"), not the client's words
            if key in _GOAL_TEXT_KEYS and isinstance(value, str):
                found.add(value)
            elif key in _GOAL_TEXT_LISTS and isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
            else:
                found |= _goal_text(value)
    elif isinstance(node, list):
        for value in node:
            found |= _goal_text(value)
    return found


def goal_free_text() -> set[str]:
    found: set[str] = set()
    for path in sorted((EXAMPLES / "goals").glob("*.yaml")):
        found |= _goal_text(yaml.safe_load(path.read_text(encoding="utf-8")))
    for path in sorted((EXAMPLES / "goals").glob("*.csv")):
        with path.open(encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                found.update(row[k] for k in _CSV_TEXT if row.get(k))
                for key in _GOAL_TEXT_LISTS:
                    found.update(v for v in (row.get(key) or "").split(";") if v)
    return found


def _strings(node: Any, keys: set[str]) -> set[str]:
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keys and isinstance(value, str):
                out.add(value)
            else:
                out |= _strings(value, keys)
    elif isinstance(node, list):
        for value in node:
            out |= _strings(value, keys)
    return out


def assessment_free_text() -> set[str]:
    texts: set[str] = set()
    for path in sorted((EXAMPLES / "clinic" / "assessments").glob("*.yaml")):
        texts |= _strings(yaml.safe_load(path.read_text(encoding="utf-8")), _ASSESSMENT_TEXT_KEYS)
    return texts


def free_text(min_length: int = 12) -> set[str]:
    """Free text long enough to be the person's own (short values like "Yes" are not)."""
    return {t for t in assessment_free_text() | goal_free_text() if len(t) >= min_length}


class PhiScan:
    """Finds the examples' PHI in any text."""

    def __init__(self, extra: frozenset[str] = frozenset()) -> None:
        names = people()
        self.values = names | free_text() | set(extra)
        words = sorted(names, key=len, reverse=True)
        # Not inside a longer word or number, but "Okafor_Adaeze.yaml" is a hit.
        alternatives = "|".join(map(re.escape, words))
        self._words = re.compile(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")
        self._texts = sorted(free_text() | set(extra), key=len, reverse=True)

    def hits(self, text: str) -> list[str]:
        """The PHI values found in ``text`` (each once)."""
        found = {m.group(0) for m in self._words.finditer(text)}
        found.update(t for t in self._texts if t in text)
        return sorted(found)
