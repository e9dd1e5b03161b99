"""CDS Hooks counters: cards shown and the clinicians' feedback on them (no patient data).

In memory, per process, behind a lock, so the web app records and the daemon's ``/metrics``
can later expose them (``snapshot``) without reaching into the web layer. Labels are the
service id, the rule id and the outcome: never a patient, a card's text or a user.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["CDS_COUNTERS", "OUTCOMES", "CdsCounters", "CdsSnapshot", "Outcome"]

Outcome = Literal["accepted", "overridden"]

#: The feedback outcomes CDS Hooks 2.0 defines.
OUTCOMES: Final[tuple[Outcome, ...]] = ("accepted", "overridden")


@dataclass(frozen=True)
class CdsSnapshot:
    """``cards``: (service, rule) -> shown; ``feedback``: (service, rule, outcome) -> n."""

    cards: dict[tuple[str, str], int]
    feedback: dict[tuple[str, str, str], int]


class CdsCounters:
    """Counts of cards shown (service, rule) and feedback (service, rule, outcome)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cards: Counter[tuple[str, str]] = Counter()
        self._feedback: Counter[tuple[str, str, str]] = Counter()

    def card_shown(self, service: str, rule: str) -> None:
        with self._lock:
            self._cards[(service, rule)] += 1

    def feedback(self, service: str, rule: str, outcome: Outcome) -> None:
        with self._lock:
            self._feedback[(service, rule, outcome)] += 1

    def snapshot(self) -> CdsSnapshot:
        """The counts so far (copies)."""
        with self._lock:
            return CdsSnapshot(dict(self._cards), dict(self._feedback))

    def reset(self) -> None:
        with self._lock:
            self._cards.clear()
            self._feedback.clear()


#: The process's counters (one served app per process).
CDS_COUNTERS: Final = CdsCounters()
