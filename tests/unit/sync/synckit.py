"""Helpers for the sync engine's unit tests: real ``Desired`` records and a fake server.

``FakeServer`` implements the ``SyncClient`` Protocol the engine takes, with the semantics
the engine relies on from a FHIR server: transactions are all-or-nothing, a conditional
create (``ifNoneExist``) finds an existing resource (``200``) instead of duplicating it, an
update whose ``ifMatch`` is not the current version is refused with 412, ``urn:uuid``
references between entries of one transaction are rewritten to ``Type/id``. Tests switch on
the misbehaviour they need (a refused record, an answer that confirms nothing).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from alliance_fhir.adapters.record import Desired, record_uuid
from alliance_fhir.exceptions import ConflictError, FatalError, ServerRejectedError
from alliance_fhir.fhir import ReadResult

NS = "http://alliance-fhir.test/identifier"
MRN = "http://clinic.test/mrn"
#: The people the fake server knows, by MRN: ``Patient/<id>``.
PATIENTS = {"MRN-1": "p1", "MRN-2": "p2"}
REFUSAL = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "invalid",
            "diagnostics": "not a valid answer",
            "expression": ["item[0].answer[0]"],
        }
    ],
}


def patient(mrn: str) -> dict[str, Any]:
    """A logical reference to an EHR patient, as our adapters write it."""
    return {"type": "Patient", "identifier": {"system": MRN, "value": mrn}}


def response(key: str, *, mrn: str = "MRN-1", answer: str = "3") -> Desired:
    """A check-in (its own record group unless a score joins it)."""
    resource = {
        "resourceType": "QuestionnaireResponse",
        "identifier": {"system": f"{NS}/assessment", "value": key},
        "status": "completed",
        "subject": patient(mrn),
        "item": [{"linkId": "heard", "answer": [{"valueString": answer}]}],
    }
    return Desired.identified("assessment", key, resource, namespace=NS, group=key)


def score(key: str, *, mrn: str = "MRN-1", total: int = 30) -> Desired:
    """The score of check-in ``key``: same record group, points at the response by urn."""
    resource = {
        "resourceType": "Observation",
        "identifier": [{"system": f"{NS}/score", "value": key}],
        "status": "final",
        "subject": patient(mrn),
        "derivedFrom": [{"reference": record_uuid("assessment", key)}],
        "valueInteger": total,
    }
    return Desired.identified("score", key, resource, namespace=NS, group=key)


def checkin(key: str, *, mrn: str = "MRN-1", answer: str = "3", total: int = 30) -> list[Desired]:
    """A response and its score: one record group of two records."""
    return [response(key, mrn=mrn, answer=answer), score(key, mrn=mrn, total=total)]


def goal(key: str, *, status: str = "active", text: str = "Walk the dog") -> Desired:
    """A Goal others may edit (merged three ways on update), in plan ``plan``'s group."""
    resource = {
        "resourceType": "Goal",
        "identifier": [{"system": f"{NS}/goal", "value": key}],
        "lifecycleStatus": status,
        "description": {"text": text},
        "subject": patient("MRN-1"),
    }
    return Desired.identified(
        "goal", key, resource, namespace=NS, group="plan", update_mode="merge"
    )


def careplan(key: str, goals: list[str], *, title: str = "Mornings") -> Desired:
    """A CarePlan linking our goals ``goals`` by their bundle uuids (merged on update)."""
    resource = {
        "resourceType": "CarePlan",
        "identifier": [{"system": f"{NS}/careplan", "value": key}],
        "status": "active",
        "intent": "plan",
        "title": title,
        "subject": patient("MRN-1"),
        "goal": [{"reference": record_uuid("goal", g, namespace=NS)} for g in goals],
    }
    return Desired.identified(
        "careplan", key, resource, namespace=NS, group="plan", update_mode="merge"
    )


def identifiers(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(system, value)`` of a resource's identifier(s) (one Identifier or a list)."""
    found = resource.get("identifier") or []
    items = [found] if isinstance(found, dict) else found
    return [(str(i.get("system")), str(i.get("value"))) for i in items]


class FakeServer:
    """An in-memory FHIR server speaking just the SyncClient Protocol (thread-safe)."""

    def __init__(self) -> None:
        #: (resourceType, id) -> the stored resource, ``meta.versionId`` included.
        self.resources: dict[tuple[str, str], dict[str, Any]] = {}
        #: Every transaction Bundle received, in order, refused ones included.
        self.transactions: list[dict[str, Any]] = []
        #: Identifier values whose entries make the whole transaction refused (400).
        self.refuse: set[str] = set()
        #: When set, a successful transaction is answered with only this many entries.
        self.answer_entries: int | None = None
        self._next_id = 0
        self._lock = threading.Lock()

    # The SyncClient Protocol

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.transactions.append(copy.deepcopy(bundle))
            entries = bundle["entry"]
            self._check(entries)
            staged = dict(self.resources)
            answers, urls = [], {}
            for entry in entries:
                answer, url = self._apply(entry, staged)
                answers.append(answer)
                urls[entry["fullUrl"]] = url
            for (rtype, rid), resource in staged.items():
                if staged[(rtype, rid)] is not self.resources.get((rtype, rid)):
                    _rewrite(resource, urls)
            self.resources = staged
            if self.answer_entries is not None:
                answers = answers[: self.answer_entries]
            return {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}

    def search(self, resource_type: str, params: Mapping[str, str]) -> Iterator[dict[str, Any]]:
        assert resource_type == "Patient", resource_type
        for token in params["identifier"].split(","):
            system, _, value = token.partition("|")
            if system == MRN and value in PATIENTS:
                yield {
                    "resourceType": "Patient",
                    "id": PATIENTS[value],
                    "identifier": [{"system": MRN, "value": value}],
                }

    def read(self, resource_type: str, resource_id: str) -> ReadResult:
        with self._lock:
            found = self.resources.get((resource_type, resource_id))
        if found is None:
            raise FatalError("HTTP 404 Not Found", status=404)
        version = found["meta"]["versionId"]
        return ReadResult(copy.deepcopy(found), version, f'W/"{version}"', None)

    # What tests look at or do to the server

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for (t, _), r in sorted(self.resources.items()) if t == resource_type]

    def find(self, resource_type: str, value: str) -> dict[str, Any]:
        """The one resource of a type carrying our identifier value ``value``."""
        [found] = [r for r in self.of_type(resource_type) if value in dict(identifiers(r)).values()]
        return found

    def edit(self, resource_type: str, value: str, **changes: Any) -> None:
        """Someone in the EHR changes a resource of ours (a new version)."""
        with self._lock:
            found = self.find(resource_type, value)
            found.update(changes)
            found["meta"] = {"versionId": str(int(found["meta"]["versionId"]) + 1)}

    # Internals

    def _check(self, entries: list[dict[str, Any]]) -> None:
        """Refuse the whole transaction as a server would: bad content, then stale versions."""
        for entry in entries:
            if any(v in self.refuse for _, v in identifiers(entry["resource"])):
                raise ServerRejectedError(
                    "HTTP 400 Bad Request", status=400, outcome=REFUSAL, method="POST"
                )
        for entry in entries:
            request = entry["request"]
            if request["method"] != "PUT" or "ifMatch" not in request:
                continue
            rtype, rid = request["url"].split("/")
            current = self.resources.get((rtype, rid))
            if current is None or request["ifMatch"] != f'W/"{current["meta"]["versionId"]}"':
                raise ConflictError("HTTP 412 Precondition Failed", status=412, method="PUT")

    def _apply(
        self, entry: dict[str, Any], staged: dict[tuple[str, str], dict[str, Any]]
    ) -> tuple[dict[str, Any], str]:
        request = entry["request"]
        resource = copy.deepcopy(entry["resource"])
        rtype = resource["resourceType"]
        if request["method"] == "POST":
            existing = self._search_identifier(rtype, request["ifNoneExist"], staged)
            if existing is not None:
                version = existing["meta"]["versionId"]
                location = f"{rtype}/{existing['id']}/_history/{version}"
                return {"response": {"status": "200 OK", "location": location}}, (
                    f"{rtype}/{existing['id']}"
                )
            self._next_id += 1
            rid, version, status = str(self._next_id), "1", "201 Created"
        else:
            rid = request["url"].split("/")[1]
            previous = staged.get((rtype, rid))
            version = str(int(previous["meta"]["versionId"]) + 1) if previous else "1"
            status = "200 OK"
        resource["id"] = rid
        resource["meta"] = {"versionId": version}
        staged[(rtype, rid)] = resource
        location = f"{rtype}/{rid}/_history/{version}"
        return {"response": {"status": status, "location": location}}, f"{rtype}/{rid}"

    @staticmethod
    def _search_identifier(
        rtype: str, search: str, staged: Mapping[tuple[str, str], dict[str, Any]]
    ) -> dict[str, Any] | None:
        name, _, token = search.partition("=")
        assert name == "identifier", search
        system, _, value = token.partition("|")
        for (t, _), resource in staged.items():
            if t == rtype and (system, value) in identifiers(resource):
                return resource
        return None


def _rewrite(node: Any, urls: Mapping[str, str]) -> None:
    """Point ``urn:uuid`` references at what the same transaction created."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref in urls:
            node["reference"] = urls[ref]
        for value in node.values():
            _rewrite(value, urls)
    elif isinstance(node, list):
        for value in node:
            _rewrite(value, urls)
