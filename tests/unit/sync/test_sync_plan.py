"""Planning decides from hashes alone; references resolve without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from alliance_fhir.adapters.record import Desired, placeholder_paths, record_uuid
from alliance_fhir.sync.plan import make_plan
from alliance_fhir.sync.references import (
    PersonKey,
    PersonResolver,
    UnresolvedPerson,
    person_keys,
    resolve_references,
)
from alliance_fhir.sync.state import StateStore

PATIENT = {"type": "Patient", "identifier": {"system": "urn:mrn", "value": "M1"}}


def _qr(answer: str = "a") -> dict[str, object]:
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "subject": dict(PATIENT),
        "item": [{"linkId": "x", "answer": [{"valueString": answer}]}],
    }


def _desired(key: str = "k1", answer: str = "a") -> Desired:
    return Desired(
        kind="assessment",
        key=key,
        resource=_qr(answer),
        search=f"identifier=urn:x|{key}",
        group=key,
    )


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state.sqlite3")


def test_new_records_are_created_and_unchanged_ones_cost_nothing(store: StateStore) -> None:
    d = _desired()
    assert make_plan([d], store.all_records()).counts() == {"create": 1}
    store.record(
        kind="assessment",
        key="k1",
        resource_type="QuestionnaireResponse",
        server_id="7",
        version_id="1",
        content_hash=d.hash,
        status="synced",
        run_id="r",
    )
    plan = make_plan([_desired()], store.all_records())
    assert plan.counts() == {"unchanged": 1}
    assert plan.writes == []


def test_changed_content_is_an_update_carrying_the_last_seen_version(store: StateStore) -> None:
    store.record(
        kind="assessment",
        key="k1",
        resource_type="QuestionnaireResponse",
        server_id="7",
        version_id="3",
        content_hash=_desired().hash,
        status="synced",
        run_id="r",
    )
    plan = make_plan([_desired(answer="b")], store.all_records())
    assert plan.counts() == {"update": 1}
    assert plan.writes[0].state is not None
    assert plan.writes[0].state.version_id == "3"


def test_a_conflict_stays_a_conflict_unless_the_policy_is_overwrite(store: StateStore) -> None:
    store.record(
        kind="assessment",
        key="k1",
        resource_type="QuestionnaireResponse",
        server_id="7",
        version_id="3",
        content_hash="old",
        status="conflict",
        run_id="r",
    )
    assert make_plan([_desired()], store.all_records()).counts() == {"conflict": 1}
    overwrite = make_plan([_desired()], store.all_records(), overwrite_conflicts=True)
    assert overwrite.counts() == {"update": 1}


def test_a_rejected_record_without_server_id_is_tried_again(store: StateStore) -> None:
    store.record(
        kind="assessment",
        key="k1",
        resource_type="QuestionnaireResponse",
        server_id=None,
        version_id=None,
        content_hash=None,
        status="rejected",
        run_id="r",
    )
    assert make_plan([_desired()], store.all_records()).counts() == {"create": 1}


def test_hash_ignores_server_owned_fields() -> None:
    a = _qr()
    b = {**_qr(), "id": "99", "meta": {"versionId": "4"}}
    assert (
        Desired("assessment", "k", a, "s", "g").hash == Desired("assessment", "k", b, "s", "g").hash
    )


def test_people_resolve_in_one_search_per_batch_and_unknown_ones_are_reported() -> None:
    calls: list[dict[str, str]] = []

    def search(rtype: str, params: dict[str, str]) -> list[dict[str, object]]:
        calls.append(params)
        return [
            {
                "resourceType": rtype,
                "id": "p1",
                "identifier": [{"system": "urn:mrn", "value": "M1"}],
            }
        ]

    resolver = PersonResolver(search)  # type: ignore[arg-type]
    keys = person_keys(_qr()) | {PersonKey("Patient", "urn:mrn", "M2")}
    resolver.resolve(keys)
    resolver.resolve(keys)  # cached: no second search
    assert len(calls) == 1
    assert calls[0]["identifier"] == "urn:mrn|M1,urn:mrn|M2"
    out = resolve_references(_qr(), people=resolver, in_bundle=set(), known={}, conditional={})
    assert out["subject"]["reference"] == "Patient/p1"
    missing = {
        **_qr(),
        "subject": {"type": "Patient", "identifier": {"system": "urn:mrn", "value": "M2"}},
    }
    with pytest.raises(UnresolvedPerson):
        resolve_references(missing, people=resolver, in_bundle=set(), known={}, conditional={})


def test_record_references_become_bundle_local_known_or_conditional() -> None:
    target = record_uuid("assessment", "k1")
    obs = {"resourceType": "Observation", "derivedFrom": [{"reference": target}]}
    resolver = PersonResolver(lambda *_: [])
    inside = resolve_references(
        obs,
        people=resolver,
        in_bundle={target},
        known={},
        conditional={target: "QuestionnaireResponse?identifier=a|b"},
    )
    assert inside["derivedFrom"][0]["reference"] == target
    known = resolve_references(
        obs,
        people=resolver,
        in_bundle=set(),
        known={target: "QuestionnaireResponse/5"},
        conditional={},
    )
    assert known["derivedFrom"][0]["reference"] == "QuestionnaireResponse/5"
    cond = resolve_references(
        obs,
        people=resolver,
        in_bundle=set(),
        known={},
        conditional={target: "QuestionnaireResponse?identifier=a|b"},
    )
    assert cond["derivedFrom"][0]["reference"] == "QuestionnaireResponse?identifier=a|b"
    assert obs["derivedFrom"][0]["reference"] == target  # the input is never mutated


def _plan_like() -> dict[str, object]:
    """A resource with placeholders at several depths, one inside another, and parts
    without any (which a resolved copy must share, not copy)."""
    goal = record_uuid("goal", "g1")
    return {
        "resourceType": "CarePlan",
        "subject": dict(PATIENT),
        "author": {
            "type": "Practitioner",
            "identifier": {"system": "urn:npi", "value": "N1"},
            "extension": [{"valueReference": {"reference": goal}}],
        },
        "goal": [{"reference": goal}, {"reference": "Goal/7"}],
        "note": [{"text": "kept as is"}],
        "activity": [{"outcomeReference": [[{"reference": goal}]]}],
    }


def test_placeholders_are_found_in_document_order() -> None:
    assert placeholder_paths(_plan_like()) == (
        ("subject",),
        ("author",),
        ("author", "extension", 0, "valueReference"),
        ("goal", 0),
        ("activity", 0, "outcomeReference", 0, 0),
    )
    desired = Desired("careplan", "k", _plan_like(), "s", "g")
    assert desired.placeholders == placeholder_paths(_plan_like())


def test_resolving_by_known_paths_copies_only_what_changes() -> None:
    """A bundle resolves each record by the paths its ``Desired`` found once; the answer is
    the one a walk of the resource gives, the input stays as it was, and the parts with
    nothing to change are the input's own objects (no deep copy per record)."""
    plan = _plan_like()
    before = repr(plan)
    goal = record_uuid("goal", "g1")

    def search(rtype: str, params: dict[str, str]) -> list[dict[str, object]]:
        value = params["identifier"].split("|")[1]
        return [
            {
                "id": f"{rtype[0]}-{value}",
                "identifier": [{"system": params["identifier"].split("|")[0], "value": value}],
            }
        ]

    resolver = PersonResolver(search)  # type: ignore[arg-type]
    resolver.resolve(person_keys(plan, placeholder_paths(plan)))
    args = {"people": resolver, "in_bundle": set(), "known": {goal: "Goal/1"}, "conditional": {}}
    walked = resolve_references(plan, **args)  # type: ignore[arg-type]
    by_paths = resolve_references(plan, paths=placeholder_paths(plan), **args)  # type: ignore[arg-type]
    assert by_paths == walked
    assert by_paths["subject"] == {**PATIENT, "reference": "Patient/P-M1"}
    assert by_paths["author"]["reference"] == "Practitioner/P-N1"
    assert by_paths["author"]["extension"][0]["valueReference"] == {"reference": "Goal/1"}
    assert by_paths["goal"] == [{"reference": "Goal/1"}, {"reference": "Goal/7"}]
    assert by_paths["activity"][0]["outcomeReference"] == [[{"reference": "Goal/1"}]]
    assert repr(plan) == before
    assert by_paths["note"] is plan["note"]
    assert by_paths["goal"][1] is plan["goal"][1]  # type: ignore[index]
    assert by_paths is not plan
