"""Which resources carry the monitor's alerts on this server (issue #13 item 6).

Many EHRs take no Flag writes (some no Task writes either). Rather than failing every alert,
the monitor degrades as ``alert_resources`` says: ``auto`` picks Flag + Task where the server
takes both, Task only where it takes no Flag (the Task then carries what the Flag would
have said: the rule's code, the priority, the message as its reason), and only the run's
own output where it takes no Task. The choice is said once per run and shown by ``doctor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alliance_fhir.fhir import Capabilities

__all__ = ["AlertCarrier", "AlertResources", "alert_carrier"]

AlertResources = Literal["flag+task", "task", "report"]

_SAYS: dict[AlertResources, str] = {
    "flag+task": "Flag + Task",
    "task": "Task only",
    "report": "not written; reported in the monitor's output only",
}


@dataclass(frozen=True)
class AlertCarrier:
    """The resources alerts are written as, and why when that is less than Flag + Task."""

    resources: AlertResources
    reason: str | None = None

    @property
    def degraded(self) -> bool:
        return self.resources != "flag+task"

    def describe(self) -> str:
        """One line for ``doctor`` and the monitor's output."""
        said = _SAYS[self.resources]
        return f"{said} ({self.reason})" if self.reason else said


def alert_carrier(configured: str, caps: Capabilities) -> AlertCarrier:
    """The configured carrier, or (``auto``) the strongest the server's statement allows."""
    chosen = next((r for r in _SAYS if r == configured), None)
    if chosen is not None:
        reason = None if chosen == "flag+task" else f"alert_resources = {configured}"
        return AlertCarrier(chosen, reason)
    if not caps.writable("Task"):
        return AlertCarrier("report", "the server takes no Task writes")
    if not caps.writable("Flag"):
        return AlertCarrier("task", "the server takes no Flag writes")
    return AlertCarrier("flag+task")
