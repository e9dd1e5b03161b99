"""Headless Chromium (Debian's package) driven over the Chrome DevTools Protocol.

Just enough for the SMART launch tests: open a page, follow its redirects, read the text,
click, change a form field, screenshot, and pause one request (``Fetch``) to look at or
rewrite its URL before it leaves the browser. One browser per instance, with its own
throw-away profile; ``websocket-client`` carries the protocol.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websocket


class CdpError(RuntimeError):
    """Chromium answered a command with an error, or did not do what was waited for."""


class Chromium:
    """A headless Chromium with one page (``close()`` ends it and removes its profile)."""

    def __init__(self, *, timeout: float = 60.0) -> None:
        binary = shutil.which("chromium")
        if binary is None:
            raise CdpError("chromium is not installed (make sysdeps)")
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(
            prefix="alliance-cdp-", ignore_cleanup_errors=True
        )
        self._proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "--window-size=1200,1600",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        self._wait(lambda: port_file.is_file() and port_file.read_text().count("\n") >= 1)
        port, path = port_file.read_text().splitlines()[:2]
        browser = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=timeout)
        self._ws = browser
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)
        self._session: str | None = session["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")

    # -- protocol --------------------------------------------------------------------------

    def send(self, method: str, **params: Any) -> int:
        """Send one command (to the page once attached) without waiting for its answer."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if getattr(self, "_session", None) and not method.startswith("Target."):
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        return self._next_id

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and return its result (answers to earlier ``send``s are
        dropped, events kept)."""
        sent = self.send(method, **params)
        while True:
            reply = json.loads(self._ws.recv())
            if reply.get("id") == sent:
                if "error" in reply:
                    raise CdpError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})
            if "method" in reply:
                self._events.append(reply)

    def _pump(self, seconds: float) -> None:
        """Read events for up to ``seconds``."""
        self._ws.settimeout(seconds)
        try:
            reply = json.loads(self._ws.recv())
            if "method" in reply:
                self._events.append(reply)
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self._ws.settimeout(self.timeout)

    def _wait(self, ready: Callable[[], bool], what: str = "chromium") -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise CdpError(f"timed out waiting for {what}")

    # -- the page --------------------------------------------------------------------------

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise CdpError(f"script failed: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    @property
    def text(self) -> str:
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def wait_for_page(self, url_prefix: str) -> None:
        """Until the page at ``url_prefix...`` has loaded (redirects on the way are fine)."""
        self._wait(
            lambda: (
                self.url.startswith(url_prefix)
                and self.evaluate("document.readyState") == "complete"
            ),
            f"a loaded page at {url_prefix}",
        )

    def navigate(self, url: str) -> None:
        """Start loading ``url`` and return at once (its requests may be paused)."""
        self.send("Page.navigate", url=url)

    def goto(self, url: str, *, lands_on: str | None = None) -> None:
        """Open ``url`` and wait for the page it lands on (``lands_on`` prefix, else itself)."""
        self.call("Page.navigate", url=url)
        self.wait_for_page(lands_on or url.split("?", 1)[0])

    def click(self, selector: str, *, lands_on: str) -> None:
        """Click the element and wait for the next page at ``lands_on``."""
        marker = "window.__alliance_marker"
        self.evaluate(f"{marker} = 1")
        clicked = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) return false; el.click(); return true; })()"
        )
        if not clicked:
            raise CdpError(f"nothing to click at {selector}")
        self._wait(
            lambda: (
                self.evaluate(f"typeof {marker} === 'undefined'") is True
                and self.url.startswith(lands_on)
                and self.evaluate("document.readyState") == "complete"
            ),
            f"the page after clicking {selector}",
        )

    def set_value(self, selector: str, value: str) -> None:
        ok = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            f" if (!el) return false; el.value = {json.dumps(value)}; return true; }})()"
        )
        if not ok:
            raise CdpError(f"no field at {selector}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    # -- requests ----------------------------------------------------------------------------

    def pause_requests(self, url_pattern: str) -> None:
        """From now on, requests matching ``url_pattern`` (``*`` wildcards) wait for
        :meth:`paused_request` and :meth:`release`."""
        self.call("Fetch.enable", patterns=[{"urlPattern": url_pattern}])

    def paused_request(self) -> tuple[str, str]:
        """``(request id, url)`` of the next paused request."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for event in self._events:
                if event.get("method") == "Fetch.requestPaused":
                    self._events.remove(event)
                    params = event["params"]
                    return str(params["requestId"]), str(params["request"]["url"])
            self._pump(0.5)
        raise CdpError("no request was paused")

    def release(self, request_id: str, *, url: str | None = None) -> None:
        """Let the paused request go on (to ``url`` instead, when given) and stop pausing."""
        params: dict[str, Any] = {"requestId": request_id}
        if url is not None:
            params["url"] = url
        self.call("Fetch.continueRequest", **params)
        self.call("Fetch.disable")

    def close(self) -> None:
        try:
            self._ws.close()
        finally:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._profile.cleanup()
