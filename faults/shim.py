"""A tiny real HTTP server in front of HAPI that answers scripted HTTP errors.

toxiproxy works on TCP and cannot produce an HTTP status, so bursts of ``503`` and of ``429``
with ``Retry-After`` come from this shim: a threaded ``http.server`` on 127.0.0.1 that forwards
every request to the upstream FHIR server, except that the next transaction POSTs (a POST to
the service base, which is how the sync engine writes) are answered from ``script`` without
reaching the server. The client under test talks real HTTP/1.1 over TCP to it.

``echo_when`` imitates an EHR that echoes the request in its errors: every write whose body
contains that text is refused with a 422 OperationOutcome whose diagnostics and details repeat
a patient's name, MRN and birth date and the request body itself (PHI the client must never
log, report or store).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

import httpx

#: Headers that describe one hop, not the message; never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "content-length",
        "content-encoding",
        "accept-encoding",
        "host",
    }
)


#: What the echoing 422 says about the patient, beside the request body it repeats.
ECHOED = "Adaeze Okafor (MRN-1001, born 1988-03-14)"


class StatusShim:
    """``StatusShim("http://127.0.0.1:8097", ["429", "503"])`` then ``shim.url("/fhir")``."""

    def __init__(self, upstream: str, script: list[str] | None = None, *, retry_after: int = 1):
        self.upstream = upstream.rstrip("/")
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._script = list(script or [])
        self.injected: list[str] = []
        self.forwarded = 0
        self.echo_when: bytes | None = None
        #: The service base whose writes the script answers (an EHR-like profile's, #13);
        #: ``every_write`` answers single requests too, not only bundles posted to the base.
        self.write_path = "/fhir"
        self.every_write = False
        self.echoed = 0
        self._http = httpx.Client(timeout=120.0)
        shim = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet: a request line would carry search parameters

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if shim._echoes(self.command, body):
                    self._reply_echo(body)
                    return
                action = shim._next_action(self.command, self.path)
                if action is not None:
                    self._reply_error(action)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    resp = shim._http.request(
                        self.command, shim.upstream + self.path, content=body, headers=headers
                    )
                except httpx.HTTPError:
                    self.send_error(502, "upstream unreachable")
                    return
                with shim._lock:
                    shim.forwarded += 1
                self.send_response(resp.status_code)
                for key, value in resp.headers.multi_items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            def _reply_error(self, action: str) -> None:
                text = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error",'
                text += b'"code":"transient","diagnostics":"injected by the fault shim"}]}'
                self.send_response(int(action))
                if action == "429":
                    self.send_header("Retry-After", str(shim.retry_after))
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def _reply_echo(self, body: bytes) -> None:
                said = body.decode("utf-8", "replace")[:4000]
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": "error",
                            "code": "invalid",
                            "diagnostics": f"Rejected for {ECHOED}: {said}",
                            "details": {"text": f"Patient {ECHOED} has no such encounter"},
                            "expression": ["Bundle.entry[0].resource"],
                        }
                    ],
                }
                text = json.dumps(outcome).encode()
                self.send_response(422)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_action(self, method: str, path: str) -> str | None:
        where = path.split("?")[0].rstrip("/")
        is_transaction = method == "POST" and where == self.write_path
        is_write = (
            self.every_write
            and method in ("POST", "PUT")
            and where.startswith(self.write_path)
            and not where.endswith("/_search")
        )
        if not (is_transaction or is_write):
            return None
        with self._lock:
            if not self._script:
                return None
            action = self._script.pop(0)
            self.injected.append(action)
            return action

    def _echoes(self, method: str, body: bytes) -> bool:
        if method in ("GET", "HEAD") or self.echo_when is None or self.echo_when not in body:
            return False
        with self._lock:
            self.echoed += 1
        return True

    def load(self, script: list[str]) -> None:
        with self._lock:
            self._script = list(script)
            self.injected = []

    def url(self, path: str = "/fhir") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

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
