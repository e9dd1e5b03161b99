"""One private, file-backed HAPI for the tests that stop and start a server (its data must
survive): the daemon's outage test and the server's own persistence test share it, so the
suite pays for three JVM starts instead of four.

It runs without request validation (``--no-validation``): validating is what ``/fhir`` of
the main test server is for, and warming the validator up is a third of a start. The
restart tests prove what a stop and a start do to the data and to the clients, which does
not depend on it.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

ServerScript = Callable[..., subprocess.CompletedProcess[str]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FileDbServer:
    """``scripts/fhir-server`` on a port of its own with an H2 file database in ``db_dir``."""

    def __init__(self, script: ServerScript, db_dir: Path) -> None:
        self._script = script
        self.port = str(free_port())
        self.db_dir = str(db_dir)
        self.base = f"http://127.0.0.1:{self.port}/fhir"

    def start(self) -> None:
        """Start (a no-op while running); the test fails when the server does not come up."""
        result = self._script(
            "start", "--port", self.port, "--file-db", self.db_dir, "--no-validation"
        )
        if result.returncode != 0:
            pytest.fail(
                f"file-db server did not start:\n{result.stdout}\n{result.stderr}", pytrace=False
            )

    def stop(self) -> int:
        """Stop it; ``scripts/fhir-server stop``'s exit code."""
        return self._script("stop", "--port", self.port, timeout=120).returncode

    def running(self) -> bool:
        return self._script("status", "--port", self.port, timeout=60).returncode == 0
