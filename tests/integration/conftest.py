"""Fixtures for integration tests against a real HAPI FHIR R4 JPA server.

* ``fhir_base_url`` (session): ``$ALLIANCE_FHIR_TEST_SERVER`` when set, otherwise a
  local server started with ``scripts/fhir-server start`` on port
  ``$ALLIANCE_FHIR_TEST_PORT`` (default 8089). A server that cannot be started fails
  the tests loudly (never skips). A server started here is stopped at session end.
* ``fhir_http`` (session): an ``httpx.Client`` with ``base_url`` set to the server.
* ``fhir_server_script`` (session): runs ``scripts/fhir-server`` with arguments.
* ``fhir_reset`` (function): expunges all data before the test and returns a
  callable to expunge again mid-test.

Every test under ``tests/integration`` gets the ``integration`` marker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO_ROOT / "scripts" / "fhir-server"
INTEGRATION_DIR = Path(__file__).resolve().parent

DEFAULT_TEST_PORT = 8089
# The first start of a fresh clone builds the server (Maven downloads ~300 MB).
START_TIMEOUT_S = int(os.environ.get("ALLIANCE_FHIR_TEST_START_TIMEOUT", "1200"))
HTTP_TIMEOUT_S = 120.0

FHIR_JSON = "application/fhir+json"
EXPUNGE_EVERYTHING = {
    "resourceType": "Parameters",
    "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(getattr(item, "path", item.fspath))).resolve()
        if path == INTEGRATION_DIR or INTEGRATION_DIR in path.parents:
            item.add_marker(pytest.mark.integration)


def run_server_script(
    *args: str, timeout: float = START_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/fhir-server`` non-interactively; never raises on a non-zero exit."""
    env = dict(os.environ)
    env.setdefault("CI", "true")
    try:
        return subprocess.run(
            ["bash", str(SERVER_SCRIPT), *args],
            cwd=str(REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = (
            exc.stdout.decode(errors="replace")
            if isinstance(exc.stdout, bytes)
            else (exc.stdout or "")
        )
        err = (
            exc.stderr.decode(errors="replace")
            if isinstance(exc.stderr, bytes)
            else (exc.stderr or "")
        )
        return subprocess.CompletedProcess(
            exc.cmd, 124, out, err + f"\n[timed out after {timeout}s]"
        )


def _server_log_tail(port: int, lines: int = 80) -> str:
    log = REPO_ROOT / ".fhir-server" / f"server-{port}.log"
    if not log.exists():
        return "(no server log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _metadata_ok(base_url: str) -> bool:
    try:
        resp = httpx.get(f"{base_url}/metadata", timeout=30.0, headers={"Accept": FHIR_JSON})
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


@pytest.fixture(scope="session")
def fhir_base_url() -> Iterator[str]:
    external = os.environ.get("ALLIANCE_FHIR_TEST_SERVER", "").strip()
    if external:
        yield external.rstrip("/")
        return

    port = int(os.environ.get("ALLIANCE_FHIR_TEST_PORT", str(DEFAULT_TEST_PORT)))
    already_running = run_server_script("status", "--port", str(port), timeout=60).returncode == 0
    result = run_server_script("start", "--port", str(port))
    url = (result.stdout.strip().splitlines() or [f"http://127.0.0.1:{port}/fhir"])[-1].strip()
    if result.returncode != 0 or not _metadata_ok(url):
        # with pytest-xdist another worker may have won the race to start it
        if run_server_script(
            "status", "--port", str(port), timeout=60
        ).returncode == 0 and _metadata_ok(url):
            already_running = True
        else:
            pytest.fail(
                f"Could not start the local HAPI FHIR test server on port {port} "
                f"(scripts/fhir-server exit code {result.returncode}).\n"
                f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}\n"
                f"--- server log tail ---\n{_server_log_tail(port)}",
                pytrace=False,
            )
    started_here = not already_running and not os.environ.get("PYTEST_XDIST_WORKER")
    try:
        yield url
    finally:
        if started_here and os.environ.get("ALLIANCE_FHIR_TEST_KEEP_SERVER", "") in (
            "",
            "0",
            "false",
        ):
            run_server_script("stop", "--port", str(port), timeout=120)


@pytest.fixture(scope="session")
def fhir_server_script() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``fhir_server_script("start", "--port", "8091")`` runs scripts/fhir-server."""
    return run_server_script


@pytest.fixture(scope="session")
def fhir_http(fhir_base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fhir_base_url,
        timeout=HTTP_TIMEOUT_S,
        headers={"Accept": FHIR_JSON},
    ) as client:
        yield client


def expunge_everything(base_url: str) -> None:
    resp = httpx.post(
        f"{base_url}/$expunge",
        json=EXPUNGE_EVERYTHING,
        headers={"Content-Type": FHIR_JSON, "Accept": FHIR_JSON},
        timeout=HTTP_TIMEOUT_S,
    )
    if resp.status_code != 200:
        pytest.fail(
            f"$expunge on {base_url} failed: HTTP {resp.status_code}: {resp.text[:2000]}",
            pytrace=False,
        )


@pytest.fixture
def fhir_reset(fhir_base_url: str) -> Callable[[], None]:
    """Expunge all data now; the returned callable expunges again when called."""

    def reset() -> None:
        expunge_everything(fhir_base_url)

    reset()
    return reset
