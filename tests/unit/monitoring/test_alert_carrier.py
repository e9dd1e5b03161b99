"""What carries the monitor's alerts (issue #13 item 6): Flag + Task, Task only, or only the
run's output, from the server's statement or ``alert_resources``."""

from __future__ import annotations

from typing import Any

import pytest

from alliance_fhir.app.alert_mode import alert_carrier
from alliance_fhir.fhir import Capabilities


def caps(*writable: str) -> Capabilities:
    def res(rtype: str) -> dict[str, Any]:
        codes = ("read", "search-type") + (("create", "update") if rtype in writable else ())
        return {"type": rtype, "interaction": [{"code": c} for c in codes]}

    return Capabilities.from_statement(
        {
            "resourceType": "CapabilityStatement",
            "rest": [{"mode": "server", "resource": [res("Flag"), res("Task")]}],
        }
    )


@pytest.mark.parametrize(
    ("writable", "resources", "said"),
    [
        (("Flag", "Task"), "flag+task", "Flag + Task"),
        (("Task",), "task", "Task only (the server takes no Flag writes)"),
        (
            (),
            "report",
            "not written; reported in the monitor's output only (the server takes no Task writes)",
        ),
    ],
)
def test_auto_takes_the_strongest_the_server_allows(
    writable: tuple[str, ...], resources: str, said: str
) -> None:
    carrier = alert_carrier("auto", caps(*writable))
    assert carrier.resources == resources
    assert carrier.describe() == said
    assert carrier.degraded == (resources != "flag+task")


def test_configured_wins_over_the_statement() -> None:
    carrier = alert_carrier("task", caps("Flag", "Task"))
    assert (carrier.resources, carrier.describe()) == ("task", "Task only (alert_resources = task)")
    assert alert_carrier("flag+task", caps("Task")).resources == "flag+task"


def test_an_unknown_statement_keeps_flag_and_task() -> None:
    assert alert_carrier("auto", Capabilities.unknown()).resources == "flag+task"
