"""Fixtures for integration tests against a real HAPI FHIR R4 JPA server.

* ``fhir_base_url`` (session): ``$ALLIANCE_FHIR_TEST_SERVER`` when set, otherwise a
  local server started with ``scripts/fhir-server start`` on port
  ``$ALLIANCE_FHIR_TEST_PORT`` (default 8089). A server that cannot be started fails
  the tests loudly (never skips). A server started here is stopped at session end. It is
  started with ``--auth-mount`` (the SMART tests' bearer-checked ``/auth/fhir``, see below).
* ``fhir_http`` (session): an ``httpx.Client`` with ``base_url`` set to the server.
* ``fhir_server_script`` (session): runs ``scripts/fhir-server`` with arguments.
* ``file_db_server`` (session): a second, file-backed server for the tests that stop and
  start one (``filedbkit.FileDbServer``: ``base``, ``start()``, ``stop()``, ``running()``).
* ``fhir_reset`` (function): expunges all data before the test and returns a
  callable to expunge again mid-test.
* ``clinic`` (function): an emptied server holding only the example clinic's people
  (seeded through a state store of its own), and the path of an editable copy of
  ``examples/``; ``published_clinic`` (function): the same with our Questionnaires and
  CodeSystem published too.
* ``log_capture`` (session, autouse): every log line alliance-fhir emits while an
  integration test runs is also kept in ``LOG_CAPTURE`` (see below);
  ``tests/integration/test_zz_log_scan.py``, moved to the very end of the run, scans it for
  PHI and tokens. Output of CLI subprocesses is added with ``LOG_CAPTURE.add(text)``.

How the capture survives tests that reconfigure logging: ``alliance_fhir.log.configure``
calls ``structlog.configure`` each time (CLI start-up, tests capturing output); for the
session that function is wrapped so that every configuration gets one more processor after
the renderer, a tee that records the rendered line and passes it on unchanged. Whatever
stream or level a test picks, what is emitted is recorded; what the level filter drops is
never rendered and is not a log line. stdlib ``logging`` records of ``alliance_fhir.*``
loggers are recorded too.

Every test under ``tests/integration`` gets the ``integration`` marker.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog

from alliance_fhir import log as alog

from .clinickit import copy_clinic, make_api
from .filedbkit import FileDbServer
from .oidckit import OidcProvider

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


LOG_SCAN_MODULE = "test_zz_log_scan.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(getattr(item, "path", item.fspath))).resolve()
        if path == INTEGRATION_DIR or INTEGRATION_DIR in path.parents:
            item.add_marker(pytest.mark.integration)
    # the log scan judges every integration test's lines: it runs last, whatever the order
    scan = [i for i in items if Path(str(getattr(i, "path", i.fspath))).name == LOG_SCAN_MODULE]
    if scan:
        items[:] = [i for i in items if i not in scan] + scan


class LogCapture:
    """Rendered log lines emitted during integration tests (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lines: list[str] = []
        self.recording = False

    def add(self, text: str) -> None:
        """Record output from elsewhere (a CLI subprocess's stderr), line by line."""
        with self._lock:
            self.lines.extend(line for line in text.splitlines() if line.strip())

    def __call__(self, logger: Any, method: str, event: Any) -> Any:
        """structlog processor placed after the renderer: record, pass on unchanged."""
        if self.recording:
            self.add(event if isinstance(event, str) else repr(event))
        return event


class _StdlibTee(logging.Handler):
    def __init__(self, capture: LogCapture) -> None:
        super().__init__(level=logging.DEBUG)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        if self.capture.recording:
            self.capture.add(self.format(record))


LOG_CAPTURE = LogCapture()


def _tee_configure(original: Callable[..., None]) -> Callable[..., None]:
    def configure(*args: Any, **kwargs: Any) -> None:
        if args:
            kwargs["processors"], args = args[0], args[1:]
        processors = kwargs.get("processors")
        if processors is not None and LOG_CAPTURE not in processors:
            kwargs["processors"] = [*processors, LOG_CAPTURE]
        original(*args, **kwargs)

    return configure


@pytest.fixture(scope="session", autouse=True)
def log_capture() -> Iterator[LogCapture]:
    original = structlog.configure
    structlog.configure = _tee_configure(original)  # type: ignore[assignment]
    handler = _StdlibTee(LOG_CAPTURE)
    ours = logging.getLogger("alliance_fhir")
    ours.addHandler(handler)
    alog.configure(level="INFO")  # a configuration with the tee, before any test's own
    try:
        yield LOG_CAPTURE
    finally:
        ours.removeHandler(handler)
        structlog.configure = original  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def _record_logs(log_capture: LogCapture) -> Iterator[None]:
    log_capture.recording = True
    try:
        yield
    finally:
        log_capture.recording = False


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
    # /auth/fhir beside /fhir: the SMART tests' bearer-checked mount (``smart_fhir_base_url``)
    result = run_server_script("start", "--port", str(port), "--auth-mount", oidc_issuer())
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
def file_db_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileDbServer]:
    """A second, file-backed server (tests/integration/filedbkit.py) for the tests that stop
    and start one; started at first use, running when handed over, stopped at session end."""
    server = FileDbServer(run_server_script, tmp_path_factory.mktemp("file-db") / "h2")
    server.start()
    try:
        yield server
    finally:
        server.stop()


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


@pytest.fixture
def clinic(fhir_base_url: str, fhir_reset: Callable[[], None], tmp_path: Path) -> Path:
    """An empty server holding only the example clinic's people; an editable clinic copy."""
    examples = copy_clinic(tmp_path)
    with make_api(fhir_base_url, tmp_path / "seed.sqlite3") as api:
        api.seed(examples / "clinic" / "people.json")
    return examples


@pytest.fixture
def published_clinic(fhir_base_url: str, clinic: Path, tmp_path: Path) -> Path:
    """The ``clinic`` with our Questionnaires published (what scoring and monitoring need)."""
    with make_api(fhir_base_url, tmp_path / "seed.sqlite3") as api:
        assert api.publish(labels_only=True).ok
    return clinic


@pytest.fixture(scope="session")
def fhir_profile_url(fhir_base_url: str) -> Callable[[str], str]:
    """``fhir_profile_url("batch-only")`` -> the base URL of that EHR-like profile.

    The test server mounts every profile (see ``scripts/fhir-server --help``) next to
    ``/fhir`` at ``/profiles/<name>/fhir``, over the same database, so one server start
    serves them all.
    """
    origin = fhir_base_url.rstrip("/").removesuffix("/fhir")

    def url(profile: str) -> str:
        return f"{origin}/profiles/{profile}/fhir"

    return url


# -- SMART authorization (issue #18): a real OpenID provider --------------------------------
# ``oidc_provider`` (session): an ``OidcProvider`` (tests/integration/oidckit.py) on
# ``$ALLIANCE_FHIR_OIDC_TEST_PORT`` (default 8190) whose access tokens are for the
# bearer-checked mount of the test server (``smart_fhir_base_url``). A test registers its
# clients/keys/launch contexts and calls ``apply()``; stopped at session end.
# ``smart_fhir_base_url`` (session): ``/auth/fhir`` of the one test server, mounted at its
# start (``--auth-mount <issuer>``) over the same database as ``/fhir``, checking
# ``oidc_provider``'s bearer tokens and SMART scopes. One JVM serves every test.


def oidc_test_port() -> int:
    return int(os.environ.get("ALLIANCE_FHIR_OIDC_TEST_PORT", "8190"))


def oidc_issuer() -> str:
    """The test provider's issuer (``OidcProvider.issuer``), known before it starts."""
    return f"http://127.0.0.1:{oidc_test_port()}"


def smart_resource_url() -> str:
    """The bearer-checked mount's base URL: the audience of the provider's tokens."""
    port = int(os.environ.get("ALLIANCE_FHIR_TEST_PORT", str(DEFAULT_TEST_PORT)))
    return f"http://127.0.0.1:{port}/auth/fhir"


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    provider = OidcProvider(
        port=oidc_test_port(),
        resource=smart_resource_url(),
        workdir=tmp_path_factory.mktemp("oidc"),
    )
    assert provider.issuer == oidc_issuer()
    provider.add_user("test-clinician", "Practitioner/test-clinician")
    provider.write_config()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture(scope="session")
def smart_fhir_base_url(fhir_base_url: str, oidc_provider: OidcProvider) -> str:
    """The test server's ``/auth/fhir``, which checks ``oidc_provider``'s bearer tokens.

    It shares the database of ``/fhir``: a test that needs an empty server expunges first.
    """
    url = fhir_base_url.rstrip("/").removesuffix("/fhir") + "/auth/fhir"
    if url != smart_resource_url():
        pytest.fail(
            f"the SMART tests need the test server started here (its /auth/fhir mount), "
            f"not {fhir_base_url}",
            pytrace=False,
        )
    if not _metadata_ok(url):
        pytest.fail(
            f"{url} does not answer: was the server on this port started without "
            f"--auth-mount {oidc_issuer()}? Stop it and run again.",
            pytrace=False,
        )
    return url
