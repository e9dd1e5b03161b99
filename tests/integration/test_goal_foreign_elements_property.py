"""Property (issue #14): whatever the EHR adds to our Goal and CarePlan that we do not own
(other systems' extensions, meta.tag/security, category, note, activity, addresses, contained
resources), our next push leaves it byte-identical on the server. Against HAPI, bounded to
20 generated examples (one pushed update each) so it stays under a minute."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

from .test_goal_merge_integration import GOAL, NEW_WORDS, OLD_WORDS, PLAN, _one, _put

EHR = "http://ehr.example.org/fhir"
MARK = "ehr: "
TITLE = "Getting my mornings back"

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
phrases = st.lists(words, min_size=1, max_size=4).map(" ".join)
codings = st.builds(
    lambda system, code, display: (
        {"system": f"{EHR}/CodeSystem/{system}", "code": code}
        | ({"display": display} if display else {})
    ),
    words,
    words,
    st.none() | phrases,
)
concepts = st.builds(
    lambda coding, text: {"coding": [coding]} | ({"text": text} if text else {}),
    codings,
    st.none() | phrases,
)
values = st.one_of(
    st.builds(lambda s: {"valueString": s}, phrases),
    st.builds(lambda b: {"valueBoolean": b}, st.booleans()),
    st.builds(lambda i: {"valueInteger": i}, st.integers(-1000, 1000)),
    st.builds(lambda c: {"valueCodeableConcept": c}, concepts),
)
extensions = st.lists(
    st.builds(
        lambda name, value: {"url": f"{EHR}/StructureDefinition/{name}"} | value, words, values
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda e: e["url"],
)
notes = st.lists(
    st.builds(
        lambda text, author: (
            {"text": f"{MARK}{text}"} | ({"authorString": author} if author else {})
        ),
        phrases,
        st.none() | phrases,
    ),
    min_size=1,
    max_size=3,
)
activities = st.lists(
    st.builds(
        lambda text, status: {"detail": {"status": status, "description": f"{MARK}{text}"}},
        phrases,
        st.sampled_from(["not-started", "scheduled", "in-progress", "on-hold"]),
    ),
    min_size=1,
    max_size=2,
)
additions = st.fixed_dictionaries(
    {},
    optional={
        "extension": extensions,
        "tag": st.lists(codings, min_size=1, max_size=2, unique_by=lambda c: c["code"]),
        "security": st.lists(codings, min_size=1, max_size=2, unique_by=lambda c: c["code"]),
        "category": st.lists(concepts, min_size=1, max_size=2),
        "note": notes,
        "activity": activities,
        "contained": phrases,  # a contained Condition with this text, linked by addresses
    },
)

#: The elements the EHR adds to; ``meta.*`` ones live under ``meta``.
ELEMENTS = ("extension", "category", "note", "activity", "addresses", "contained")
META = ("tag", "security")


def _is_ehrs(item: Any) -> bool:
    """Every item the EHR adds carries its system's URL, the note mark, or ``ehr1``."""
    text = _bytes(item)
    return EHR in text or MARK in text or "ehr1" in text


def _foreign(resource: dict[str, Any]) -> dict[str, list[Any]]:
    """The EHR's items of each element, as the server gives them."""
    meta = resource.get("meta") or {}
    found = {e: [i for i in resource.get(e) or [] if _is_ehrs(i)] for e in ELEMENTS}
    return found | {f"meta.{k}": [i for i in meta.get(k) or [] if _is_ehrs(i)] for k in META}


def _as_the_ehr(current: dict[str, Any], add: dict[str, Any]) -> dict[str, Any]:
    """``current`` as a clinician's system saves it: the last example's additions taken
    away, ``add``'s put in."""
    out = {k: v for k, v in current.items() if k != "meta"}
    for element in ELEMENTS:
        kept = [i for i in out.pop(element, None) or [] if not _is_ehrs(i)]
        if kept:
            out[element] = kept
    if current["resourceType"] != "CarePlan":
        add = {k: v for k, v in add.items() if k != "activity"}
    for element in ("extension", "category", "note", "activity"):
        if element in add:
            out[element] = [*out.get(element, []), *add[element]]
    if "contained" in add:
        condition = {
            "resourceType": "Condition",
            "id": "ehr1",
            "code": {"text": add["contained"]},
            "subject": current["subject"],
        }
        out["contained"] = [condition]
        out["addresses"] = [*out.get("addresses", []), {"reference": "#ehr1"}]
    meta = {k: add[k] for k in META if k in add}
    if meta:
        out["meta"] = meta
    return out


def _bytes(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _both(http: httpx.Client) -> dict[str, dict[str, Any]]:
    return {"Goal": _one(http, "Goal", GOAL), "CarePlan": _one(http, "CarePlan", PLAN)}


def test_what_the_ehr_added_to_our_goal_and_care_plan_survives_a_push_byte_for_byte(
    fhir_base_url: str, clinic: Path, fhir_http: httpx.Client, tmp_path: Path
) -> None:
    source = clinic / "goals" / "plan-mrn-1001.yaml"
    api = AllianceFhir(Settings(server_url=fhir_base_url, state_path=tmp_path / "s.sqlite3"))
    assert api.push_goals([source]).ok
    turn = {"n": 0}

    @settings(
        max_examples=20,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(goal_add=additions, plan_add=additions)
    def pushed(goal_add: dict[str, Any], plan_add: dict[str, Any]) -> None:
        for rtype, add in (("Goal", goal_add), ("CarePlan", plan_add)):
            _put(fhir_http, _as_the_ehr(_both(fhir_http)[rtype], add))
        before = _both(fhir_http)
        # our side changes too (a Goal's words, the plan's title): both are real updates
        turn["n"] += 1
        old, new = (OLD_WORDS, NEW_WORDS) if turn["n"] % 2 else (NEW_WORDS, OLD_WORDS)
        title = f"title: {TITLE} {turn['n']}"
        text = re.sub(r"(?m)^title: .*$", title, source.read_text(), count=1)
        source.write_text(text.replace(old, new, 1))

        report = api.push_goals([source])

        assert report.ok, report.result.failures if report.result else report.problems
        after = _both(fhir_http)
        assert after["Goal"]["description"]["text"] == new
        assert after["CarePlan"]["title"] == f"{TITLE} {turn['n']}"
        for rtype, add in (("Goal", goal_add), ("CarePlan", plan_add)):
            added, kept = _foreign(before[rtype]), _foreign(after[rtype])
            for element in ("extension", "category", "note", "contained"):
                assert bool(added[element]) == (element in add), (rtype, element)  # it landed
            for element, items in added.items():
                assert _bytes(kept[element]) == _bytes(items), (rtype, element)

    try:
        pushed()
    finally:
        api.close()
