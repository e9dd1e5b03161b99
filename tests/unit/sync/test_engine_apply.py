"""The sync engine's apply paths against a fake server: what lands, what is quarantined,
what a user sees in the counts and the state store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from synckit import REFUSAL, FakeServer, checkin, identifiers, response

from alliance_fhir.exceptions import redact_outcome
from alliance_fhir.fhir import EncodedJson
from alliance_fhir.sync.engine import LastWindow, SyncEngine
from alliance_fhir.sync.state import StateStore

CONFLICT_REASON = "changed on the server since our last write; not overwritten"
UNCONFIRMED = "the server's answer did not confirm this record"
UNKNOWN_PATIENT = "unknown Patient: no Patient with the given identifier on the server"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore(tmp_path / "state.sqlite3") as opened:
        yield opened


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def _engine(
    server: FakeServer, store: StateStore, *, bundle_size: int = 100, conflict_policy: str = "skip"
) -> SyncEngine:
    """One worker, so bundles reach the server in a predictable order."""
    return SyncEngine(
        server, store, bundle_size=bundle_size, concurrency=1, conflict_policy=conflict_policy
    )


def _rows(store: StateStore) -> dict[str, str]:
    """``kind/key`` -> status of every record in the state store."""
    return {f"{k}/{key}": s.status for (k, key), s in sorted(store.all_records().items())}


def _runs(store: StateStore) -> list[dict[str, Any]]:
    """Outcome and counts of each run, oldest first (what ``alliance-fhir status`` lists)."""
    return [{"outcome": r.outcome, "counts": r.counts} for r in reversed(store.recent_runs())]


def _keys(bundle: dict[str, Any]) -> list[str]:
    """Our identifier value of each entry of a transaction, in order."""
    return [identifiers(e["resource"])[0][1] for e in bundle["entry"]]


def test_first_run_creates_everything_in_bundles_that_keep_record_groups_whole(
    server: FakeServer, store: StateStore
) -> None:
    desired = checkin("a") + checkin("b") + checkin("c")
    result = _engine(server, store, bundle_size=4).run(desired)

    assert dict(result.counts) == {"created": 6}
    assert result.ok
    assert result.failures == []
    assert result.bundles == 2
    # two groups fill a bundle of four; the third group goes alone, never split
    assert [_keys(b) for b in server.transactions] == [["a", "a", "b", "b"], ["c", "c"]]
    requests = [e["request"] for b in server.transactions for e in b["entry"]]
    assert {r["method"] for r in requests} == {"POST"}
    assert all(r["ifNoneExist"].startswith("identifier=") for r in requests)
    assert set(_rows(store).values()) == {"synced"}
    assert len(_rows(store)) == 6
    # inside one transaction the score points at its response by urn, which the server maps
    qr = server.find("QuestionnaireResponse", "a")
    assert server.find("Observation", "a")["derivedFrom"] == [
        {"reference": f"QuestionnaireResponse/{qr['id']}"}
    ]
    assert qr["subject"]["reference"] == "Patient/p1"


def test_the_bundles_of_a_window_are_as_even_as_its_groups_allow(
    server: FakeServer, store: StateStore
) -> None:
    """Bundles go side by side and a window lasts as long as its largest: 14 entries under a
    bundle size of 10 go as 8 + 6, not as 10 + 4 (a connection idle while the other sends)."""
    desired = [r for key in "abcdefg" for r in checkin(key)]
    result = _engine(server, store, bundle_size=10).run(desired)

    assert dict(result.counts) == {"created": 14}
    assert [_keys(b) for b in server.transactions] == [
        ["a", "a", "b", "b", "c", "c", "d", "d"],
        ["e", "e", "f", "f", "g", "g"],
    ]


def test_a_runs_last_window_goes_in_finer_bundles_so_the_connections_finish_together(
    server: FakeServer, store: StateStore
) -> None:
    """A run's last window (here: ``run``'s only one) is cut into up to two bundles per
    connection, none under 25 entries; a window the run goes on after keeps the fewest."""
    first = [r for key in range(60) for r in checkin(f"a{key:02}")]  # 120 entries
    engine = SyncEngine(server, store, bundle_size=100, concurrency=2)

    last = LastWindow(r for key in range(60) for r in checkin(f"b{key:02}"))

    result = engine.run_windows([first, last])

    assert dict(result.counts) == {"created": 240}
    sizes: dict[str, list[int]] = {"a": [], "b": []}
    for bundle in server.transactions:
        sizes[_keys(bundle)[0][:1]].append(len(bundle["entry"]))
    assert sorted(sizes["a"]) == [60, 60]  # not the last: the fewest bundles, even
    assert sorted(sizes["b"]) == [30, 30, 30, 30]  # the last: 2 x 2 connections
    assert result.bundles == 6


def test_bundles_of_creates_are_encoded_ahead_and_updates_are_built_by_their_sender(
    server: FakeServer, store: StateStore
) -> None:
    """A bundle of creates is built and encoded in the run's thread while the bundles before
    it are sent; what is posted is exactly that encoding. An update's build may read the
    server, so its sender builds it."""
    engine = SyncEngine(server, store, bundle_size=4, concurrency=2)
    engine.run([r for key in "abcdef" for r in checkin(key)])
    assert len(server.transactions) == 3
    for bundle in server.transactions:
        assert isinstance(bundle, EncodedJson)
        assert json.loads(bundle.content) == bundle

    server.transactions.clear()
    SyncEngine(server, store, bundle_size=4, concurrency=2).run(
        [r for key in "abcdef" for r in checkin(key, answer="4")]
    )
    assert server.transactions  # the changed responses, updated
    assert not any(isinstance(bundle, EncodedJson) for bundle in server.transactions)


def test_a_small_last_window_stays_one_bundle(server: FakeServer, store: StateStore) -> None:
    """A daemon cycle's few records are one request, not four."""
    desired = [r for key in range(20) for r in checkin(f"c{key:02}")]  # 40 entries
    result = SyncEngine(server, store, bundle_size=100, concurrency=2).run(desired)

    assert dict(result.counts) == {"created": 40}
    assert [len(b["entry"]) for b in server.transactions] == [40]


def test_a_refused_bundle_is_split_without_rejecting_an_unresolved_group_twice(
    server: FakeServer, store: StateStore
) -> None:
    """Check-in x names an unknown patient (rejected while the bundle is built) and the server
    refuses b: the bundle is split, and x is not built, rejected and counted a second time."""
    server.refuse = {"b"}
    desired = checkin("a") + checkin("x", mrn="MRN-404") + checkin("b")

    result = _engine(server, store, bundle_size=10).run(desired)

    assert dict(result.counts) == {"created": 2, "rejected": 4}
    assert len(result.failures) == 4
    assert [f for f in result.failures if "/x:" in f] == [
        f"assessment/x: {UNKNOWN_PATIENT}",
        f"score/x: {UNKNOWN_PATIENT}",
    ]
    assert sorted((d.kind, d.key) for d in store.open_dead_letters()) == [
        ("assessment", "b"),
        ("assessment", "x"),
        ("score", "b"),
        ("score", "x"),
    ]
    # the whole bundle, then a and b alone: x was never sent
    assert [_keys(t) for t in server.transactions] == [["a", "a", "b", "b"], ["a", "a"], ["b", "b"]]


def test_a_second_run_with_nothing_changed_sends_no_writes(
    server: FakeServer, store: StateStore
) -> None:
    desired = [*checkin("a"), response("b")]
    _engine(server, store).run(desired)
    sent = len(server.transactions)

    again = _engine(server, store).run(desired)

    assert dict(again.counts) == {"unchanged": 3}
    assert again.ok
    assert again.bundles == 0
    assert len(server.transactions) == sent
    assert [r["outcome"] for r in _runs(store)] == ["ok", "ok"]


def test_a_refused_transaction_is_split_so_one_bad_record_holds_back_no_other(
    server: FakeServer, store: StateStore
) -> None:
    server.refuse = {"b"}  # the server refuses check-in b (its response and its score)
    desired = checkin("a") + checkin("b") + checkin("c")

    result = _engine(server, store, bundle_size=10).run(desired)

    # one refused bundle of all three groups, then each group alone
    assert [_keys(b) for b in server.transactions] == [
        ["a", "a", "b", "b", "c", "c"],
        ["a", "a"],
        ["b", "b"],
        ["c", "c"],
    ]
    assert dict(result.counts) == {"created": 4, "rejected": 2}
    assert not result.ok
    assert len(server.of_type("QuestionnaireResponse")) == 2
    assert _rows(store) == {
        "assessment/a": "synced",
        "assessment/b": "rejected",
        "assessment/c": "synced",
        "score/a": "synced",
        "score/b": "rejected",
        "score/c": "synced",
    }
    assert _runs(store)[-1] == {"outcome": "partial", "counts": dict(result.counts)}


def test_what_still_fails_lands_in_the_dead_letters_with_the_servers_reason(
    server: FakeServer, store: StateStore
) -> None:
    server.refuse = {"b"}
    result = _engine(server, store).run([response("a"), response("b")])

    [letter] = store.open_dead_letters()
    assert (letter.kind, letter.key, letter.resource_type) == (
        "assessment",
        "b",
        "QuestionnaireResponse",
    )
    assert letter.http_status == 400
    assert letter.outcome == redact_outcome(REFUSAL)  # the server's words are not kept
    assert letter.reason == "HTTP 400 Bad Request: error: invalid (item[0].answer[0])"
    assert letter.run_id == result.run_id
    [failure] = result.failures
    assert failure.startswith("assessment/b: HTTP 400 Bad Request")
    assert "item[0].answer[0]" in failure

    # fixed at the source and accepted: the dead letter is resolved, nothing is left open
    server.refuse = set()
    fixed = _engine(server, store).run([response("a"), response("b", answer="4")])
    assert dict(fixed.counts) == {"unchanged": 1, "created": 1}
    assert store.open_dead_letters() == []
    assert _rows(store)["assessment/b"] == "synced"


def _edited_elsewhere(server: FakeServer, store: StateStore) -> None:
    """Run 1 writes check-in a; a clinician then edits it in the EHR (version 2)."""
    _engine(server, store).run([response("a")])
    server.edit("QuestionnaireResponse", "a", status="amended")


@pytest.mark.parametrize("policy", ["skip", "overwrite"])
def test_a_412_conflict_is_quarantined_never_overwritten_silently(
    policy: str, server: FakeServer, store: StateStore
) -> None:
    _edited_elsewhere(server, store)

    result = _engine(server, store, conflict_policy=policy).run([response("a", answer="5")])

    assert dict(result.counts) == {"conflict": 1}
    assert result.failures == ["assessment/a: conflict"]
    assert not result.ok
    assert server.find("QuestionnaireResponse", "a")["status"] == "amended"
    assert _rows(store) == {"assessment/a": "conflict"}
    [letter] = store.open_dead_letters()
    assert (letter.key, letter.http_status, letter.reason) == ("a", 412, CONFLICT_REASON)


def test_under_skip_a_conflict_stays_until_a_human_decides(
    server: FakeServer, store: StateStore
) -> None:
    _edited_elsewhere(server, store)
    _engine(server, store).run([response("a", answer="5")])
    sent = len(server.transactions)

    later = _engine(server, store, conflict_policy="skip").run([response("a", answer="5")])

    assert dict(later.counts) == {"conflict": 1}
    assert len(server.transactions) == sent
    assert server.find("QuestionnaireResponse", "a")["status"] == "amended"
    assert _rows(store) == {"assessment/a": "conflict"}


def test_under_overwrite_the_next_run_writes_over_the_current_version(
    server: FakeServer, store: StateStore
) -> None:
    _edited_elsewhere(server, store)
    _engine(server, store, conflict_policy="overwrite").run([response("a", answer="5")])

    later = _engine(server, store, conflict_policy="overwrite").run([response("a", answer="5")])

    assert dict(later.counts) == {"updated": 1}
    assert later.ok
    written = server.find("QuestionnaireResponse", "a")
    assert written["status"] == "completed"
    assert written["item"][0]["answer"] == [{"valueString": "5"}]
    assert written["meta"]["versionId"] == "3"
    [put] = server.transactions[-1]["entry"]
    assert put["request"]["ifMatch"] == 'W/"2"'
    assert _rows(store) == {"assessment/a": "synced"}
    assert store.open_dead_letters() == []


def test_a_412_for_our_own_earlier_write_is_recorded_as_updated(
    server: FakeServer, store: StateStore
) -> None:
    """Our update landed but its answer was lost: the server holds our content already."""
    _engine(server, store).run([response("a")])
    changed = response("a", answer="5")
    server.edit("QuestionnaireResponse", "a", item=changed.resource["item"])

    result = _engine(server, store).run([changed])

    assert dict(result.counts) == {"updated": 1}
    assert result.ok
    assert _rows(store) == {"assessment/a": "synced"}
    state = store.get("assessment", "a")
    assert state is not None
    assert state.version_id == "2"
    assert store.open_dead_letters() == []


def test_a_record_refused_only_alongside_a_conflicting_one_is_deferred_not_quarantined(
    server: FakeServer, store: StateStore
) -> None:
    _engine(server, store).run(checkin("a"))
    server.edit("Observation", "a", valueInteger=12)  # someone changed only the score

    result = _engine(server, store).run(checkin("a", answer="5", total=35))

    assert dict(result.counts) == {"conflict": 1, "deferred": 1}
    assert _rows(store) == {"assessment/a": "synced", "score/a": "conflict"}
    assert [(d.kind, d.key) for d in store.open_dead_letters()] == [("score", "a")]


@pytest.mark.parametrize("entries", [0, 1], ids=["no-entries", "short"])
def test_an_answer_that_does_not_confirm_the_writes_is_not_trusted(
    entries: int, server: FakeServer, store: StateStore
) -> None:
    server.answer_entries = entries  # the writes land, the answer does not say so
    desired = [response("a"), response("b", mrn="MRN-2")]

    result = _engine(server, store).run(desired)

    assert dict(result.counts) == {"unconfirmed": 2}
    assert not result.ok
    assert result.failures == [f"assessment/a: {UNCONFIRMED}", f"assessment/b: {UNCONFIRMED}"]
    assert _rows(store) == {}  # nothing recorded from an answer that proves nothing
    assert _runs(store)[-1]["outcome"] == "partial"

    # the next run's conditional creates find what did land: no duplicates, no rewrite
    server.answer_entries = None
    again = _engine(server, store).run(desired)
    assert dict(again.counts) == {"unchanged": 2}
    assert again.ok
    assert len(server.of_type("QuestionnaireResponse")) == 2
    assert _rows(store) == {"assessment/a": "synced", "assessment/b": "synced"}


def test_an_unresolved_patient_fails_that_record_group_only(
    server: FakeServer, store: StateStore
) -> None:
    desired = checkin("a") + checkin("x", mrn="MRN-404") + [response("b", mrn="MRN-2")]

    result = _engine(server, store).run(desired)

    # check-in x (its response and score) is refused before anything is sent; a and b land
    assert dict(result.counts) == {"created": 3, "rejected": 2}
    assert result.failures == [
        f"assessment/x: {UNKNOWN_PATIENT}",
        f"score/x: {UNKNOWN_PATIENT}",
    ]
    assert [_keys(b) for b in server.transactions] == [["a", "a", "b"]]
    assert _rows(store) == {
        "assessment/a": "synced",
        "assessment/b": "synced",
        "assessment/x": "rejected",
        "score/a": "synced",
        "score/x": "rejected",
    }
    letters = store.open_dead_letters()
    assert [(d.kind, d.key, d.reason, d.http_status) for d in letters] == [
        ("assessment", "x", UNKNOWN_PATIENT, None),
        ("score", "x", UNKNOWN_PATIENT, None),
    ]
    assert {p["subject"]["reference"] for p in server.of_type("QuestionnaireResponse")} == {
        "Patient/p1",
        "Patient/p2",
    }
