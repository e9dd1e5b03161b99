"""Helpers for the sync integration tests: a request-counting transport and a clinic."""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from pathlib import Path

import httpx

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

#: The synthetic people of the example clinic; no log line may ever carry these.
PHI = (
    "Okafor",
    "Adaeze",
    "Lindqvist",
    "Johan",
    "Marchetti",
    "Giulia",
    "Haddad",
    "Samir",
    "MRN-1001",
    "MRN-1002",
    "MRN-1003",
    "MRN-1004",
    "1988-03-14",
    "1999-07-21",
)


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts requests by method (GET vs writes)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.counts[request.method] += 1
        return super().handle_request(request)

    @property
    def writes(self) -> int:
        return sum(n for m, n in self.counts.items() if m not in ("GET", "HEAD"))

    def reset(self) -> None:
        self.counts.clear()


def make_api(
    base_url: str, state: Path, transport: CountingTransport | None = None
) -> AllianceFhir:
    settings = Settings(server_url=base_url, state_path=state)
    return AllianceFhir(settings, transport=transport)


def copy_clinic(tmp: Path) -> Path:
    """A private copy of the example clinic that a test may edit."""
    target = tmp / "examples"
    shutil.copytree(EXAMPLES, target)
    return target
