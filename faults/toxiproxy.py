"""A toxiproxy server process and its HTTP API (driven with httpx).

toxiproxy is built from the Go module proxy by ``scripts/install-toxiproxy`` (pinned version)
into ``<repo>/.tools/bin``. Every wait here is bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

REPO = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO / "scripts" / "install-toxiproxy"
TOOLS_BIN = REPO / ".tools" / "bin"


class ToxiproxyUnavailable(RuntimeError):
    """toxiproxy could not be installed or started."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_or_install(*, timeout: float = 900.0) -> Path:
    """The toxiproxy-server binary, installed with scripts/install-toxiproxy when missing."""
    tools = Path(os.environ.get("ALLIANCE_FHIR_TOOLS_DIR", REPO / ".tools")) / "bin"
    candidate = tools / "toxiproxy-server"
    try:
        result = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToxiproxyUnavailable(f"scripts/install-toxiproxy did not finish: {exc}") from exc
    if result.returncode == 0 and candidate.is_file():
        return candidate
    on_path = shutil.which("toxiproxy-server")
    if on_path:
        return Path(on_path)
    raise ToxiproxyUnavailable(
        f"scripts/install-toxiproxy failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
    )


class Proxy:
    """One proxy: ``listen`` -> ``upstream``; toxics are added and removed by name."""

    def __init__(self, api: httpx.Client, name: str, listen_port: int) -> None:
        self._api = api
        self.name = name
        self.listen_port = listen_port

    def url(self, path: str = "/fhir") -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def add_toxic(
        self,
        name: str,
        kind: str,
        *,
        stream: str = "downstream",
        toxicity: float = 1.0,
        **attributes: Any,
    ) -> None:
        body = {
            "name": name,
            "type": kind,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": attributes,
        }
        resp = self._api.post(f"/proxies/{self.name}/toxics", json=body)
        if resp.status_code not in (200, 201):
            raise ToxiproxyUnavailable(f"cannot add toxic {name}: {resp.status_code} {resp.text}")

    def clear(self) -> None:
        """Remove every toxic (connections already open stay open)."""
        resp = self._api.get(f"/proxies/{self.name}/toxics")
        resp.raise_for_status()
        for toxic in resp.json():
            self._api.delete(f"/proxies/{self.name}/toxics/{toxic['name']}").raise_for_status()

    def set_enabled(self, enabled: bool) -> None:
        """A disabled proxy refuses connections and drops the open ones."""
        resp = self._api.post(f"/proxies/{self.name}", json={"enabled": enabled})
        resp.raise_for_status()


class Toxiproxy:
    """A toxiproxy-server child process on 127.0.0.1 (API port chosen free)."""

    def __init__(self, binary: Path, log_path: Path, *, api_port: int | None = None) -> None:
        self.binary = binary
        self.log_path = log_path
        self.api_port = api_port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=10.0)

    def start(self, *, timeout: float = 20.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.binary), "-host", "127.0.0.1", "-port", str(self.api_port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ToxiproxyUnavailable(
                    f"toxiproxy-server exited with {self._proc.returncode}; see {self.log_path}"
                )
            try:
                if self.api.get("/version").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ToxiproxyUnavailable(f"toxiproxy-server did not answer within {timeout}s")

    def proxy(self, name: str, upstream: str, *, listen_port: int | None = None) -> Proxy:
        port = listen_port or free_port()
        self.api.delete(f"/proxies/{name}")
        resp = self.api.post(
            "/proxies",
            json={
                "name": name,
                "listen": f"127.0.0.1:{port}",
                "upstream": upstream,
                "enabled": True,
            },
        )
        if resp.status_code not in (200, 201):
            raise ToxiproxyUnavailable(f"cannot create proxy {name}: {resp.text}")
        return Proxy(self.api, name, port)

    def stop(self) -> None:
        self.api.close()
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
