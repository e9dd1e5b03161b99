"""Whether the process that started a run still runs it: runs left unfinished by a process
that is gone (killed mid-way) are shown and recorded as interrupted, not running forever."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def still_running(pid: int | None, host: str | None, started: float) -> bool:
    """Whether the process that started a run may still be running it. Runs without an
    owner (older stores) or of another host are given the benefit of the doubt."""
    if pid is None or host is None or host != socket.gethostname():
        return True
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    born = _process_start(pid)
    return born is None or born <= started + 1.0  # a newer process reusing the pid is not it


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from /proc; None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
