"""People are looked up while their window is mapped (``PersonResolver.prefetch``, issue 15):
a window's first bundle no longer waits a round trip for its Patient search, many small files
still make few searches, and a look-up that failed fails the run where it is needed."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.adapters.record import placeholder_paths
from alliance_fhir.app.records import assessment_windows, people_of
from alliance_fhir.assessments import Assessment
from alliance_fhir.assessments.model import Identifier
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import FatalError
from alliance_fhir.instruments.library import load_library
from alliance_fhir.sync.references import PersonKey, PersonResolver, person_keys

REPO = Path(__file__).resolve().parents[3]
CSV = REPO / "examples" / "clinic" / "assessments" / "session-ratings.csv"
CLINIC = REPO / "examples" / "clinic" / "assessments"


def _key(value: str) -> PersonKey:
    return PersonKey("Patient", "urn:mrn", value)


class Server:
    """A search that answers every identifier but ``unknown``, and can be held or fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail = False

    def search(self, rtype: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        self.calls.append((rtype, params["identifier"]))
        self.started.set()
        assert self.release.wait(10)
        if self.fail:
            raise FatalError("search failed", status=500, method="GET", url=rtype)
        for token in params["identifier"].split(","):
            system, value = token.split("|")
            if value != "unknown":
                ident = {"system": system, "value": value}
                yield {"resourceType": rtype, "id": f"id-{value}", "identifier": [ident]}


def test_a_prefetched_person_is_resolved_without_a_second_search() -> None:
    server = Server()
    people = PersonResolver(server.search)
    people.prefetch([_key("M1"), _key("M2"), _key("unknown")])
    people.resolve([_key("M2"), _key("unknown")])  # waits for the look-up under way
    assert server.calls == [("Patient", "urn:mrn|M1,urn:mrn|M2,urn:mrn|unknown")]
    assert people.get(_key("M1")) == "Patient/id-M1"
    assert people.get(_key("unknown")) is None
    people.prefetch([_key("M1")])  # known: nothing to do
    people.resolve([_key("M1"), _key("M3")])  # only the new one, searched here
    assert server.calls[1:] == [("Patient", "urn:mrn|M3")]
    assert people.searches == 2
    people.close()


def test_keys_told_during_a_look_up_are_gathered_into_the_next_one() -> None:
    server = Server()
    server.release.clear()
    people = PersonResolver(server.search)
    people.prefetch([_key("A")])
    assert server.started.wait(10)  # the first search is under way, held
    for value in ("B", "C", "D"):  # three small files' people
        people.prefetch([_key(value), _key("A")])
    server.release.set()
    people.resolve([_key(v) for v in "ABCD"])
    assert server.calls == [
        ("Patient", "urn:mrn|A"),
        ("Patient", "urn:mrn|B,urn:mrn|C,urn:mrn|D"),
    ]
    assert [people.get(_key(v)) for v in "ABCD"] == [f"Patient/id-{v}" for v in "ABCD"]
    people.close()


def test_a_failed_look_up_fails_the_resolve_that_needs_it_and_is_not_remembered() -> None:
    server = Server()
    server.fail = True
    people = PersonResolver(server.search)
    people.prefetch([_key("M1")])
    with pytest.raises(FatalError, match="search failed"):
        people.resolve([_key("M1")])
    server.fail = False
    people.resolve([_key("M1")])  # not known, not pending: searched again
    assert people.get(_key("M1")) == "Patient/id-M1"
    assert len(server.calls) == 2
    people.close()


def test_closing_drops_what_was_gathered_and_not_sent() -> None:
    server = Server()
    server.release.clear()
    people = PersonResolver(server.search)
    people.prefetch([_key("A")])
    assert server.started.wait(10)
    people.prefetch([_key("B")])  # gathered behind the one held
    people.close()
    server.release.set()
    people.resolve([_key("B")])  # no longer pending: searched here
    assert ("Patient", "urn:mrn|B") in server.calls
    assert people.get(_key("B")) == "Patient/id-B"


@pytest.mark.parametrize("source", [CSV, CLINIC], ids=["one large file", "a clinic's files"])
def test_windows_tell_each_part_s_people_before_mapping_it(tmp_path: Path, source: Path) -> None:
    settings = Settings(state_path=tmp_path / "state.sqlite3")
    library = load_library([])
    told: list[list[tuple[str, str, str]]] = []
    mapped_before: list[int] = []
    mapped = 0

    def people(found: list[tuple[str, str, str]]) -> None:
        told.append(found)
        mapped_before.append(mapped)

    windows = assessment_windows([source], library, settings, size=8, people=people)
    referred: set[PersonKey] = set()
    for window in windows:
        for d in window.desired:
            referred |= person_keys(d.resource, placeholder_paths(d.resource))
        mapped += len(window.desired)
    # told part by part, each before its records were mapped
    assert len(told) > 2
    assert mapped_before == sorted(mapped_before)
    assert mapped_before[0] == 0
    # exactly the people the records refer to, each part's once and in order
    assert {PersonKey(*k) for found in told for k in found} == referred
    assert all(found == sorted(set(found)) for found in told)
    if source == CLINIC:
        assert {k.resource_type for k in referred} == {"Patient", "Practitioner"}


def _assessment(instrument: str, practitioner: bool) -> Assessment:
    return Assessment(
        key=f"k-{instrument}",
        instrument=instrument,
        patient=Identifier(system="urn:mrn", value="M1"),
        practitioner=Identifier(system="urn:npi", value="N1") if practitioner else None,
        authored=datetime(2026, 11, 1, 9, 0, tzinfo=UTC),
    )


def test_people_of_adds_the_clinician_only_for_a_clinician_completed_form() -> None:
    library = load_library([])
    patient, clinician = ("Patient", "urn:mrn", "M1"), ("Practitioner", "urn:npi", "N1")
    assert people_of([_assessment("srs", practitioner=True)], library) == [patient]
    assert people_of([_assessment("trc-clinician", practitioner=True)], library) == [
        patient,
        clinician,
    ]
    assert people_of([_assessment("no-such-form", practitioner=True)], library) == [patient]
    assert people_of([], library) == []
