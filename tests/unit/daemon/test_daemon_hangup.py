"""SIGHUP ends the daemon cleanly (exit 0, ``daemon.stopped`` with ``reason=hangup``) so the
service manager restarts it with the new configuration; it used to die at once (exit 129)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _start(tmp_path: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ALLIANCE_FHIR_SERVER_URL": "http://127.0.0.1:9/fhir",  # nothing listens: outage
        "ALLIANCE_FHIR_STATE_PATH": str(tmp_path / "state.sqlite3"),
        "ALLIANCE_FHIR_INBOX_DIR": str(tmp_path / "inbox"),
        "ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS": "0.5",
        "ALLIANCE_FHIR_LOG_JSON": "true",
    }
    env.pop("ALLIANCE_FHIR_CONFIG", None)
    cmd = [sys.executable, "-m", "alliance_fhir.daemon", "--no-metrics", "--no-monitoring"]
    return subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _events(text: str) -> list[dict[str, object]]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_sighup_stops_the_daemon_cleanly_with_exit_0(tmp_path: Path) -> None:
    child = _start(tmp_path)
    try:
        deadline = time.monotonic() + 60
        state = tmp_path / "state.sqlite3"
        while not state.exists() and time.monotonic() < deadline:  # the daemon is up
            time.sleep(0.1)
        time.sleep(1.0)
        child.send_signal(signal.SIGHUP)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-2000:]
    stopped = [e for e in _events(out + err) if e.get("event") == "daemon.stopped"]
    assert len(stopped) == 1, (out + err)[-2000:]
    assert stopped[0]["reason"] == "hangup"
