"""CDS Hooks cards from alliance concerns: one card per concern, none when nothing is wrong.

A card is read in the two seconds a clinician gives it while the chart opens, so its
``summary`` (at most :data:`SUMMARY_MAX` characters, as the specification requires) is the
numbers and, when it fits, what to do ("Session rating below 36: 32.2 on 2024-02-21, cutoff
36; ask the client what to change about the session"); the rule's whole message goes to ``detail``.
``indicator`` follows the rule's severity (the alert Task's priority): low -> ``info``,
medium -> ``warning``, high -> ``critical``. Each card links (type ``smart``) to the
clinician view, ``<cds_public_url>/launch``, which the EHR launches with its own context.

Card ids are stable per hook call and rule (UUID v5), and :class:`IssuedCards` remembers
which rule a card was about, so feedback can be counted per rule without patient data.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import OrderedDict
from typing import Any, Final

from alliance_fhir.api.cds import Concern

__all__ = ["INDICATOR", "SOURCE_LABEL", "SUMMARY_MAX", "IssuedCards", "card", "summary"]

SUMMARY_MAX: Final = 140
SOURCE_LABEL: Final = "Alliance monitoring (alliance-fhir)"
INDICATOR: Final = {"low": "info", "medium": "warning", "high": "critical"}
LINK_LABEL: Final = "Open the alliance view"

_CARD_NS: Final = uuid.UUID("7b0b5a8e-3c1f-5d2a-9a57-1f6c0d3e2b91")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r"[:;]\s+")


def _facts(concern: Concern) -> str:
    v = concern.values
    label = concern.label
    if concern.origin == "alert" or not v:
        since = f" (alert open since {concern.since.date().isoformat()})" if concern.since else ""
        return f"{label}{since}"
    if concern.kind == "below-cutoff":
        return f"{label}: {v['score']} on {v['date']}, cutoff {v['cutoff']}"
    if concern.kind == "drop":
        return f"{label} by {v['drop']}: {v['reference']} to {v['score']} on {v['date']}"
    if concern.kind == "declining-trend":
        return f"{label}: {v['first']} to {v['score']} over {v['sessions']} check-ins ({v['date']})"
    return label


def _advice(message: str) -> str | None:
    """What the rule's message says to do: the last clause of its last sentence."""
    sentences = [s for s in _SENTENCE.split(message.strip()) if s]
    if not sentences:
        return None
    last = sentences[-1].rstrip(" .")
    parts = _CLAUSE.split(last)
    if len(parts) == 1 and len(sentences) == 1:
        return None  # one plain statement: the facts already say it
    advice = parts[-1].strip()
    return advice[:1].lower() + advice[1:] if advice else None


def summary(concern: Concern) -> str:
    """The card's summary (see the module docstring), never longer than SUMMARY_MAX."""
    facts = " ".join(_facts(concern).split())
    advice = _advice(" ".join(concern.message.split()))
    if advice and len(facts) + 2 + len(advice) <= SUMMARY_MAX:
        return f"{facts}; {advice}"
    if len(facts) <= SUMMARY_MAX:
        return facts
    return facts[: SUMMARY_MAX - 1].rstrip() + "…"


def _detail(concern: Concern) -> str:
    where = (
        "from the latest score Observations"
        if concern.origin == "scores"
        else "an alert the monitor keeps open (Flag and Task)"
    )
    return f"{concern.message}\n\n*{concern.label}* — rule `{concern.rule_id}`, {where}."


def card(concern: Concern, *, hook_instance: str, launch_url: str) -> dict[str, Any]:
    """The CDS Hooks 2.0 card of one concern."""
    card_id = uuid.uuid5(_CARD_NS, f"{hook_instance}/{concern.rule_id}")
    return {
        "uuid": str(card_id),
        "summary": summary(concern),
        "detail": _detail(concern),
        "indicator": INDICATOR[concern.severity],
        "source": {"label": SOURCE_LABEL},
        "links": [{"label": LINK_LABEL, "url": launch_url, "type": "smart"}],
    }


class IssuedCards:
    """Card uuid -> rule id of recently issued cards (bounded, thread-safe), for feedback."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._lock = threading.Lock()
        self._rules: OrderedDict[str, str] = OrderedDict()

    def add(self, card_uuid: str, rule_id: str) -> None:
        with self._lock:
            self._rules[card_uuid] = rule_id
            self._rules.move_to_end(card_uuid)
            while len(self._rules) > self._capacity:
                self._rules.popitem(last=False)

    def rule_of(self, card_uuid: str) -> str | None:
        with self._lock:
            return self._rules.get(card_uuid)
