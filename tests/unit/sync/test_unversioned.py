"""Updates on a server without versions: read, compare with what we last wrote, write."""

from __future__ import annotations

import copy
from typing import Any

from synckit import checkin

from alliance_fhir.fhir import ReadResult
from alliance_fhir.sync.unversioned import as_built, unversioned_verdict


def _built_and_resolved(answer: str = "3") -> tuple[dict[str, Any], dict[str, Any]]:
    """A score Observation as built (placeholders) and as the server would hold it."""
    built = checkin("k1", answer=answer)[1].resource
    resolved = copy.deepcopy(built)
    resolved["subject"]["reference"] = "Patient/p1"
    resolved["derivedFrom"] = [{"reference": "QuestionnaireResponse/qr1"}]
    return built, resolved


def _server(resource: dict[str, Any]) -> Any:
    def read(resource_type: str, resource_id: str) -> ReadResult:
        assert (resource_type, resource_id) == ("Observation", "o1")
        held = {**copy.deepcopy(resource), "id": "o1", "meta": {"lastUpdated": "2026-01-01"}}
        return ReadResult(held, None, None, None)

    return read


def test_the_servers_copy_turns_back_into_what_we_built() -> None:
    built, resolved = _built_and_resolved()
    assert as_built(resolved, built, resolved) == built


def test_verdicts() -> None:
    last_built, last_sent = _built_and_resolved()
    last_hash = checkin("k1")[1].hash
    new = checkin("k1", total=12)[1].resource
    new_sent = {**last_sent, "valueInteger": 12}
    # the server holds what we last wrote: write
    assert unversioned_verdict(_server(last_sent), "o1", new, new_sent, last_hash) == "write"
    # someone changed it since: a conflict, never a write
    edited = {**last_sent, "status": "amended"}
    assert unversioned_verdict(_server(edited), "o1", new, new_sent, last_hash) == "conflict"
    # our new content is there already (an answer lost): nothing to send
    assert unversioned_verdict(_server(new_sent), "o1", new, new_sent, last_hash) == "unchanged"
    # no stored hash (found by identifier): nothing to compare with, write
    assert unversioned_verdict(_server(edited), "o1", new, new_sent, None) == "write"
    assert last_built != new
