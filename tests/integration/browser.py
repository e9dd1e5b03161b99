"""Headless Chromium (Debian's ``chromium``) driven over the Chrome DevTools Protocol.

One driver for every browser test (the check-in page, the SMART clinician view). Small on
purpose: launch, open a page (with the document's HTTP status), follow redirects to the page
a flow lands on, evaluate, click the centre of an element and type key by key as a person
would, set a field, screenshot, and pause one request (``Fetch``) to look at or rewrite its
URL before it leaves the browser. Console errors, uncaught exceptions and
Content-Security-Policy refusals are collected in ``problems``. One browser per instance,
with its own throw-away profile; ``websocket-client`` carries the protocol.
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
    """Chromium answered a command with an error, or did not do what was waited for."""


class Chromium:
    """A headless Chromium with one page (``close()`` ends it and removes its profile)."""

    def __init__(
        self, *, width: int = TABLET[0], height: int = TABLET[1], timeout: float = 60.0
    ) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise BrowserError("Debian's chromium is not installed (make sysdeps)")
        self.width = width
        self.timeout = timeout
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
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port = self._devtools_port()
        pages = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self._ws = websocket.create_connection(url, timeout=timeout, suppress_origin=True)
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

    def _post(self, method: str, params: dict[str, Any] | None) -> int:
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        return msg_id

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its result; events read meanwhile are kept."""
        msg_id = self._post(method, params)
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == msg_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        if method is None:
            return  # the answer to a command sent without waiting (``start``)
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

    def _read_events(self, seconds: float) -> None:
        """Read protocol events for up to ``seconds`` without running anything in the page
        (which may be between documents)."""
        self._ws.settimeout(seconds)
        try:
            self._event(json.loads(self._ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self._ws.settimeout(self.timeout)

    def pump(self, seconds: float) -> None:
        """Read events for ``seconds`` (the page works on its own meanwhile)."""
        self.evaluate(f"new Promise(r => setTimeout(r, {int(seconds * 1000)}))", await_promise=True)

    # Pages

    def navigate(self, url: str) -> int:
        """Open ``url`` and wait for its load event; the document's HTTP status."""
        self.status = None
        self.requested = []
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(self._ws.recv())
            self._event(message)
            if message.get("method") == "Page.loadEventFired":
                break
        else:
            raise BrowserError(f"no load event within {self.timeout} s for {url}")
        assert self.status is not None
        return self.status

    def start(self, url: str) -> None:
        """Start loading ``url`` and return at once (its requests may be paused)."""
        self._post("Page.navigate", {"url": url})

    def goto(self, url: str, *, lands_on: str | None = None) -> None:
        """Open ``url`` and wait for the page it lands on (``lands_on`` prefix, else itself),
        redirects on the way included."""
        self.send("Page.navigate", {"url": url})
        self.wait_for_page(lands_on or url.split("?", 1)[0])

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    @property
    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_for_page(self, url_prefix: str) -> None:
        """Until the page at ``url_prefix...`` has loaded (redirects on the way are fine)."""
        self._until(
            f"location.href.startsWith({json.dumps(url_prefix)})"
            " && document.readyState === 'complete'",
            f"a loaded page at {url_prefix}",
        )

    def _until(self, expression: str, what: str) -> None:
        """Until ``expression`` is true, across documents: an evaluation that fails while one
        document replaces another is tried again; events are read between tries."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):
                if self.evaluate(expression) is True:
                    return
            self._read_events(0.1)
        raise BrowserError(f"timed out waiting for {what}")

    def evaluate(self, expression: str, *, await_promise: bool = False) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": await_promise},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails']}")
        return (result.get("result") or {}).get("value")

    def wait_for(self, expression: str, *, timeout: float | None = None) -> Any:
        """Until ``expression`` is truthy in the (loaded) page; its value."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            self.pump(0.1)
        raise BrowserError(f"timed out waiting for {expression}")

    # A person's hands

    def click(self, selector: str, *, lands_on: str | None = None) -> None:
        """Scroll the element into view and click its centre with the mouse; with
        ``lands_on``, wait for the next page (a new document) at that URL prefix."""
        marker = "window.__alliance_marker"
        if lands_on is not None:
            self.evaluate(f"{marker} = 1")
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
        if lands_on is not None:
            self._until(f"typeof {marker} === 'undefined'", f"the page after clicking {selector}")
            self.wait_for_page(lands_on)

    def type(self, text: str) -> None:
        """Type ``text`` into the focused element, one key at a time."""
        for char in text:
            self.send("Input.dispatchKeyEvent", {"type": "keyDown", "text": char, "key": char})
            self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": char})

    def set_value(self, selector: str, value: str) -> None:
        """Set a field's value directly (a hidden field no person could type into)."""
        ok = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) return false; el.value = {json.dumps(value)}; return true; }})()"
        )
        if not ok:
            raise BrowserError(f"no field at {selector}")

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the viewport) as PNG."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        viewport = metrics.get("cssLayoutViewport") or metrics["layoutViewport"]
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": self.width,
                    "height": max(viewport["clientHeight"], size["height"]),
                    "scale": 1,
                },
            },
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    # Requests

    def pause_requests(self, url_pattern: str) -> None:
        """From now on, requests matching ``url_pattern`` (``*`` wildcards) wait for
        :meth:`paused_request` and :meth:`release`."""
        self.send("Fetch.enable", {"patterns": [{"urlPattern": url_pattern}]})

    def paused_request(self) -> tuple[str, str]:
        """``(request id, url)`` of the next paused request."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == "Fetch.requestPaused":
                    self.events.remove(event)
                    params = event["params"]
                    return str(params["requestId"]), str(params["request"]["url"])
            self._read_events(0.5)
        raise BrowserError("no request was paused")

    def release(self, request_id: str, *, url: str | None = None) -> None:
        """Let the paused request go on (to ``url`` instead, when given) and stop pausing."""
        params: dict[str, Any] = {"requestId": request_id}
        if url is not None:
            params["url"] = url
        self.send("Fetch.continueRequest", params)
        self.send("Fetch.disable")
