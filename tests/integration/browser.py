"""Headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools Protocol.

Small on purpose: launch, navigate (with the document's HTTP status), evaluate, click the
centre of an element and type key by key as a person would, screenshot. Console errors,
uncaught exceptions and Content-Security-Policy refusals are collected in ``problems``.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websocket

#: A 10.9" tablet in portrait, CSS pixels.
TABLET = (820, 1180)


class BrowserError(RuntimeError):
    pass


class Chromium:
    def __init__(self, *, width: int = TABLET[0], height: int = TABLET[1]) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise BrowserError("Debian's chromium is not installed (make sysdeps)")
        self._profile = Path(tempfile.mkdtemp(prefix="alliance-chromium-"))
        self._proc = subprocess.Popen(
            [
                binary,
                "--headless=new",
                "--no-sandbox",  # CI runs as root, where Chromium refuses its sandbox
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port()
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self._ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self.status: int | None = None
        #: URLs the current page requested (any other origin would be a third party).
        self.requested: list[str] = []
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def _devtools_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if marker.is_file():
                text = marker.read_text().split()
                if text:
                    return int(text[0])
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}")
            time.sleep(0.1)
        raise BrowserError("chromium did not open its DevTools port within 60 s")

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError, websocket.WebSocketException):
            self.send("Browser.close")  # a browser already gone is closed enough
        self._ws.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)

    # The protocol

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == msg_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params") or {}
        self.events.append(message)
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            text = (details.get("exception") or {}).get("description") or details.get("text")
            self.problems.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = params.get("args") or []
            self.problems.append(
                "console.error: "
                + " ".join(str(a.get("value", a.get("description"))) for a in args)
            )
        elif method == "Log.entryAdded":
            entry = params.get("entry") or {}
            if entry.get("level") == "error":
                self.problems.append(f"{entry.get('source')}: {entry.get('text')}")
        elif method == "Network.responseReceived" and params.get("type") == "Document":
            self.status = int(params["response"]["status"])
        elif method == "Network.requestWillBeSent":
            self.requested.append(str(params["request"]["url"]))

    def pump(self, seconds: float) -> None:
        """Read events for ``seconds`` (the page works on its own meanwhile)."""
        self.evaluate(f"new Promise(r => setTimeout(r, {int(seconds * 1000)}))", await_promise=True)

    # Pages

    def navigate(self, url: str) -> int:
        """Open ``url`` and wait for its load event; the document's HTTP status."""
        self.status = None
        self.requested = []
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            self._event(message)
            if message.get("method") == "Page.loadEventFired":
                break
        else:
            raise BrowserError(f"no load event within 60 s for {url}")
        assert self.status is not None
        return self.status

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails']}")
        return (result.get("result") or {}).get("value")

    def wait_for(self, expression: str, *, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.pump(0.1)
        raise BrowserError(f"timed out waiting for {expression}")

    # A person's hands

    def click(self, selector: str) -> None:
        """Scroll the element into view and click its centre with the mouse."""
        box = self.evaluate(
            f"""(() => {{
              const el = document.querySelector({json.dumps(selector)});
              if (!el) return null;
              // instant: a page styled with smooth scrolling would still be moving when the
              // box is measured, and the click would land beside the element
              el.scrollIntoView({{block: 'center', behavior: 'instant'}});
              const r = el.getBoundingClientRect();
              return {{x: r.left + r.width / 2, y: r.top + r.height / 2}};
            }})()"""
        )
        if box is None:
            raise BrowserError(f"no element {selector}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    def type(self, text: str) -> None:
        """Type ``text`` into the focused element, one key at a time."""
        for char in text:
            self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": char, "key": char})
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as PNG."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": TABLET[0],
                    "height": max(TABLET[1], size["height"]),
                    "scale": 1,
                },
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path
