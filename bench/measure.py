"""Client-side measurement of one scenario in its own process: wall, CPU, peak RSS, requests.

Only the standard library here, so the peers' processes carry none of our imports.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Measurement:
    """What a worker reports (one JSON object on the last stdout line)."""

    scenario: str
    resources: int = 0
    requests: int = 0
    writes: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return self.resources / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "resources": self.resources,
            "requests": self.requests,
            "writes": self.writes,
            "wall_s": round(self.wall_s, 4),
            "cpu_s": round(self.cpu_s, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        return cls(
            scenario=str(data["scenario"]),
            resources=int(data["resources"]),
            requests=int(data["requests"]),
            writes=int(data["writes"]),
            wall_s=float(data["wall_s"]),
            cpu_s=float(data["cpu_s"]),
            peak_rss_mb=float(data["peak_rss_mb"]),
            extra=dict(data.get("extra") or {}),
        )


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timed(m: Measurement) -> Iterator[Measurement]:
    """Wall and CPU seconds (all threads) of the block; peak RSS of the process at its end."""
    cpu0 = _cpu()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.wall_s = time.perf_counter() - t0
        m.cpu_s = _cpu() - cpu0
        m.peak_rss_mb = peak_rss_mb()


def emit(m: Measurement) -> None:
    sys.stdout.write(json.dumps(m.to_json()) + "\n")
    sys.stdout.flush()
