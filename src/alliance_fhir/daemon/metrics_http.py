"""Health and metrics over local HTTP (stdlib ``http.server`` in a daemon thread).

* ``GET /healthz`` — 200 while the process serves requests (liveness).
* ``GET /readyz``  — 200 when the last cycle succeeded and the FHIR server answered within
  the readiness window, else 503 (with a one-line reason).
* ``GET /metrics`` — the library's exposition: Prometheus text 0.0.4, or OpenMetrics when
  the scraper asks for it.

The handler only reads numbers kept in memory (or, in multiprocess mode, the workers' metric
files); it never touches the state store or the FHIR server, so a scrape cannot slow down or
block a cycle.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from alliance_fhir.log import get_logger

if TYPE_CHECKING:
    from alliance_fhir.daemon.metrics import DaemonMetrics

log = get_logger("alliance_fhir.daemon")

TEXT = "text/plain; charset=utf-8"


class _Handler(BaseHTTPRequestHandler):
    server: _MetricsHTTPServer
    server_version = "alliance-fhir-daemon"
    sys_version = ""

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        metrics = self.server.metrics
        if path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            ready, reason = metrics.readiness()
            self._send(200 if ready else 503, (reason + "\n").encode("utf-8"))
        elif path == "/metrics":
            body, content_type = metrics.exposition(self.headers.get("Accept", ""))
            self._send(200, body, content_type)
        else:
            self._send(404, b"not found\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _send(self, status: int, data: bytes, content_type: str = TEXT) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every few seconds would drown the daemon's log)."""


class _MetricsHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], metrics: DaemonMetrics) -> None:
        self.metrics = metrics
        super().__init__(address, _Handler)


class MetricsServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` on ``host:port`` (port 0: any free port)."""

    def __init__(self, metrics: DaemonMetrics, host: str, port: int) -> None:
        self._server = _MetricsHTTPServer((host, port), metrics)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.25},
            name="alliance-fhir-metrics",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> MetricsServer:
        self._thread.start()
        host, port = self.address
        log.info("daemon.metrics_listening", host=host, port=port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
