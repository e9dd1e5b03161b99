"""Updates on a server without versions: read, compare with what we last wrote, write."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from synckit import FakeServer, checkin

from alliance_fhir.fhir import ReadResult
from alliance_fhir.sync.engine import SyncEngine
from alliance_fhir.sync.state import StateStore
from alliance_fhir.sync.strategies import WritePolicy
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


# -- the engine on a server whose updates If-Match cannot guard ----------------------------


def _unversioned_engine(server: FakeServer, store: StateStore) -> SyncEngine:
    policy = WritePolicy(unversioned_types=frozenset({"QuestionnaireResponse", "Observation"}))
    return SyncEngine(server, store, concurrency=1, policy=policy)


def test_a_changed_answer_is_written_after_a_read_shows_our_last_write(tmp_path: Path) -> None:
    server = FakeServer()
    with StateStore(tmp_path / "state.sqlite3") as store:
        _unversioned_engine(server, store).run(checkin("a"))
        result = _unversioned_engine(server, store).run(checkin("a", answer="4", total=40))
    assert result.counts["updated"] == 2
    assert server.find("Observation", "a")["valueInteger"] == 40


def test_a_record_changed_on_the_server_is_a_conflict_and_holds_its_group(tmp_path: Path) -> None:
    server = FakeServer()
    with StateStore(tmp_path / "state.sqlite3") as store:
        _unversioned_engine(server, store).run(checkin("a"))
        server.edit("QuestionnaireResponse", "a", status="amended")
        sent = len(server.transactions)
        result = _unversioned_engine(server, store).run(checkin("a", answer="4", total=40))
        status = store.get("assessment", "a")
    assert (result.counts["conflict"], result.counts["deferred"], result.counts["updated"]) == (
        1,
        1,
        0,
    )
    assert result.failures == ["assessment/a: conflict"]
    assert len(server.transactions) == sent  # nothing sent
    assert status is not None
    assert status.status == "conflict"
    assert server.find("QuestionnaireResponse", "a")["status"] == "amended"
    assert server.find("Observation", "a")["valueInteger"] == 30
