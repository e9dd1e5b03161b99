"""The clinician's two alert actions on the Task (#18): what is written, under If-Match,
and what is refused. The server is an in-process stand-in that keeps versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from alliance_fhir.app.clinician_actions import acknowledge, discussed_on, mark_discussed
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConflictError, InvalidInputError
from alliance_fhir.fhir import FhirClient

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
TASK_SYSTEM = "http://alliance-fhir.org/fhir/identifier/alert-task"


class TaskServer:
    def __init__(self) -> None:
        self.tasks: dict[str, dict[str, Any]] = {
            "t1": {
                "resourceType": "Task",
                "id": "t1",
                "meta": {"versionId": "3"},
                "identifier": [{"system": TASK_SYSTEM, "value": "srs-low:p1"}],
                "status": "requested",
                "intent": "order",
                "for": {"reference": "Patient/p1"},
                "note": [{"text": "the EHR's note"}],
            },
            "foreign": {
                "resourceType": "Task",
                "id": "foreign",
                "meta": {"versionId": "1"},
                "status": "requested",
                "intent": "order",
                "for": {"reference": "Patient/p1"},
            },
        }
        self.puts: list[dict[str, Any]] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        task_id = request.url.path.rsplit("/", 1)[-1]
        task = self.tasks.get(task_id)
        if task is None:
            return httpx.Response(404, json={"resourceType": "OperationOutcome", "issue": []})
        version = task["meta"]["versionId"]
        if request.method == "GET":
            return httpx.Response(200, json=task, headers={"ETag": f'W/"{version}"'})
        if request.headers.get("If-Match") not in (None, f'W/"{version}"'):
            return httpx.Response(412, json={"resourceType": "OperationOutcome", "issue": []})
        body = json.loads(request.content)
        self.puts.append(body)
        body["meta"] = {"versionId": str(int(version) + 1)}
        self.tasks[task_id] = body
        return httpx.Response(200, headers={"ETag": f'W/"{int(version) + 1}"'})


@pytest.fixture
def server() -> TaskServer:
    return TaskServer()


@pytest.fixture
def client(server: TaskServer) -> FhirClient:
    return FhirClient("http://fhir.test/fhir", transport=httpx.MockTransport(server.handle))


SETTINGS = Settings(server_url="http://fhir.test/fhir")


def test_acknowledge_accepts_the_task_under_if_match_keeping_the_rest(
    server: TaskServer, client: FhirClient
) -> None:
    acknowledge(client, SETTINGS, "p1", "t1", "3", now=NOW)

    task = server.tasks["t1"]
    assert task["status"] == "accepted"
    assert task["lastModified"] == "2024-03-01T12:00:00Z"
    assert task["note"] == [{"text": "the EHR's note"}]
    assert task["meta"]["versionId"] == "4"


def test_discussed_adds_a_coded_output_with_the_date(
    server: TaskServer, client: FhirClient
) -> None:
    mark_discussed(client, SETTINGS, "p1", "t1", "3", now=NOW)

    task = server.tasks["t1"]
    assert task["status"] == "requested"
    assert task["output"] == [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://alliance-fhir.org/fhir/CodeSystem/clinician-action",
                        "code": "discussed-with-client",
                        "display": "Discussed with client",
                    }
                ],
                "text": "Discussed with client",
            },
            "valueDateTime": "2024-03-01T12:00:00Z",
        }
    ]
    assert discussed_on(task) == "2024-03-01"
    assert discussed_on(server.tasks["foreign"]) is None


def test_a_task_changed_since_the_page_was_shown_is_a_conflict_and_not_written(
    server: TaskServer, client: FhirClient
) -> None:
    with pytest.raises(ConflictError):
        acknowledge(client, SETTINGS, "p1", "t1", "2", now=NOW)
    assert server.puts == []
    assert server.tasks["t1"]["status"] == "requested"


@pytest.mark.parametrize(("patient", "task"), [("p2", "t1"), ("p1", "foreign")])
def test_only_our_alert_tasks_of_the_patient_in_context(
    server: TaskServer, client: FhirClient, patient: str, task: str
) -> None:
    with pytest.raises(InvalidInputError, match="not an alert of this patient"):
        mark_discussed(client, SETTINGS, patient, task, "3", now=NOW)
    assert server.puts == []
