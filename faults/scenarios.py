"""The fault scenarios and the harness they share.

A scenario starts from an empty server holding only the example clinic's people and our
published Questionnaires, pushes the example assessments and goal plans through one fault,
then (when the run under the fault did not finish) removes the fault and runs the same push
again, as an operator or the daemon would. :func:`faults.invariants.check` then compares the
server and the state store with the expected records.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from alliance_fhir.adapters.record import Desired
from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import AllianceFhirError
from faults.invariants import NO_CACHE, Check, check
from faults.shim import StatusShim
from faults.toxiproxy import Proxy

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PEOPLE = EXAMPLES / "clinic" / "people.json"
ASSESSMENTS = EXAMPLES / "clinic" / "assessments"
GOALS = EXAMPLES / "goals"

#: Small bundles: many transactions per run, so a fault lands in the middle of a run.
BUNDLE_SIZE = 10


@dataclass
class Outcome:
    name: str
    fault: str
    under_fault: str = ""
    check: Check | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    retries: int = 0

    @property
    def survived(self) -> bool:
        return self.error is None and self.check is not None and self.check.ok


@dataclass
class ServerControl:
    """Kill and restart the HAPI server (only for a server this harness started)."""

    port: int
    db_dir: Path
    script: Path = REPO / "scripts" / "fhir-server"

    def pid(self) -> int:
        pid_file = REPO / ".fhir-server" / f"server-{self.port}.pid"
        return int(pid_file.read_text().split()[0])

    def start(self, *, timeout: float = 600.0) -> str:
        result = subprocess.run(
            ["bash", str(self.script), "start", "--port", str(self.port), "--file-db",
             str(self.db_dir)],
            capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"cannot start HAPI on port {self.port}:\n{result.stderr[-3000:]}")
        return result.stdout.strip().splitlines()[-1]

    def stop(self, *, timeout: float = 120.0) -> None:
        subprocess.run(
            ["bash", str(self.script), "stop", "--port", str(self.port)],
            capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


@dataclass
class Harness:
    """The server (direct URL), the toxiproxy proxy in front of it, the status shim."""

    base_url: str
    proxy: Proxy
    shim: StatusShim
    work: Path
    server: ServerControl | None = None
    log_sink: Callable[[str], object] | None = None
    _expected: list[Desired] | None = None
    #: An EHR-like profile of the test server the client talks to (issue #13); the server
    #: is still seeded and checked through ``base_url`` (unrestricted).
    profile: str | None = None

    @property
    def path(self) -> str:
        """The client's service base path: ``/fhir`` or ``/profiles/<name>/fhir``."""
        return f"/profiles/{self.profile}/fhir" if self.profile else "/fhir"

    @property
    def url(self) -> str:
        """The server as the client sees it without a fault (the profile's base)."""
        return self.base_url.rsplit("/fhir", 1)[0] + self.path

    @property
    def namespace(self) -> str:
        return Settings(server_url=self.base_url).identifier_namespace

    def settings(self, server_url: str, state: Path, **extra: object) -> Settings:
        values: dict[str, object] = {
            "server_url": server_url,
            "state_path": state,
            "bundle_size": BUNDLE_SIZE,
            "timeout_seconds": 10.0,
            "retry_attempts": 8,
            "retry_deadline_seconds": 45.0,
            **extra,
        }
        return Settings(**values)  # type: ignore[arg-type]  # keys are Settings fields

    def expected(self) -> list[Desired]:
        if self._expected is None:
            with AllianceFhir(self.settings(self.base_url, self.work / "plan.sqlite3")) as af:
                records = af.assessment_records([ASSESSMENTS])
                records.extend(af.goal_records([GOALS]))
            if records.problems:
                raise RuntimeError(f"the example clinic has problems: {records.problems[:3]}")
            self._expected = records.desired
        return self._expected

    def fresh_server(self) -> None:
        """Expunge everything, then seed the people and publish the Questionnaires."""
        resp = httpx.post(
            f"{self.base_url}/$expunge",
            json={
                "resourceType": "Parameters",
                "parameter": [{"name": "expungeEverything", "valueBoolean": True}],
            },
            headers={"Content-Type": "application/fhir+json"},
            timeout=300.0,
        )
        resp.raise_for_status()
        seed_state = self.work / f"seed-{time.monotonic_ns()}.sqlite3"
        with AllianceFhir(self.settings(self.base_url, seed_state)) as af:
            af.seed(PEOPLE)
            report = af.publish(labels_only=True)
            if not report.ok:
                raise RuntimeError(f"publish failed: {report.result and report.result.failures}")

    def push(self, server_url: str, state: Path, **extra: object) -> str:
        """Push assessments then goals in-process; 'ok', or what went wrong (one line)."""
        try:
            with AllianceFhir(self.settings(server_url, state, **extra)) as af:
                first = af.push_assessments([ASSESSMENTS])
                second = af.push_goals([GOALS])
        except AllianceFhirError as exc:
            return f"failed: {type(exc).__name__}: {str(exc)[:160]}"
        if first.ok and second.ok:
            return "ok"
        failures = [*(first.result.failures if first.result else [])]
        failures += second.result.failures if second.result else []
        return f"partial: {len(failures)} failures"

    def count(self, resource_type: str) -> int:
        try:
            resp = httpx.get(
                f"{self.base_url}/{resource_type}",
                params={"_summary": "count"},
                headers=NO_CACHE,
                timeout=5.0,
            )
            return int(resp.json()["total"]) if resp.status_code == 200 else -1
        except (httpx.HTTPError, ValueError, KeyError):
            return -1

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.1)
        return False

    @contextmanager
    def toxics(self, *toxics: tuple[str, str, dict[str, object]]) -> Iterator[None]:
        """Toxics on the proxy for the duration of the block (removed afterwards)."""
        self.proxy.clear()
        try:
            for name, kind, attrs in toxics:
                options = dict(attrs)
                stream = str(options.pop("stream", "downstream"))
                toxicity = float(str(options.pop("toxicity", 1.0)))
                self.proxy.add_toxic(name, kind, stream=stream, toxicity=toxicity, **options)
            yield
        finally:
            self.proxy.clear()

    def finish(self, outcome: Outcome, state: Path, *, recover: bool) -> None:
        """Re-run without the fault if needed (at most twice), then check the invariants."""
        if recover:
            for attempt in range(2):
                again = self.push(self.url, state)
                outcome.notes.append(f"rerun {attempt + 1}: {again}")
                if again == "ok":
                    break
        outcome.check = check(self.base_url, self.expected(), state, self.namespace)

    # -- the client as a separate process -------------------------------------------------

    def cli(self, server_url: str, state: Path, *args: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALLIANCE_FHIR_")}
        env.update(
            ALLIANCE_FHIR_BUNDLE_SIZE=str(BUNDLE_SIZE),
            ALLIANCE_FHIR_LOG_LEVEL="DEBUG",
            ALLIANCE_FHIR_LOG_JSON="true",
            ALLIANCE_FHIR_RETRY_DEADLINE_SECONDS="45",
        )
        exe = Path(sys.executable).with_name("alliance-fhir")
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "alliance_fhir.cli"]
        return subprocess.Popen(
            # --verbose: the run's log lines go to stderr, where the PHI scan reads them
            [*argv, "--verbose", "--server-url", server_url, "--state", str(state), *args],
            cwd=str(self.work),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def collect(self, proc: subprocess.Popen[str], timeout: float) -> tuple[int, str]:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=30)
        if self.log_sink is not None:
            self.log_sink(err)
        return proc.returncode, out + err


# -- scenarios ------------------------------------------------------------------------------


Scenario = Callable[[Harness, Outcome, Path], None]


def _through_toxics(*toxics: tuple[str, str, dict[str, object]]) -> Scenario:
    def run(h: Harness, outcome: Outcome, state: Path) -> None:
        with h.toxics(*toxics):
            outcome.under_fault = h.push(h.proxy.url(h.path), state, timeout_seconds=3.0)
        h.finish(outcome, state, recover=outcome.under_fault != "ok")

    return run


def baseline(h: Harness, outcome: Outcome, state: Path) -> None:
    outcome.under_fault = h.push(h.proxy.url(h.path), state)
    h.finish(outcome, state, recover=outcome.under_fault != "ok")


latency = _through_toxics(
    ("lag-down", "latency", {"latency": 250, "jitter": 100}),
    ("lag-up", "latency", {"latency": 50, "stream": "upstream"}),
)

#: Each connection closes after 4 kB of response: transaction responses are cut mid-body,
#: after the server committed. The retry must not duplicate anything.
reset_mid_response = _through_toxics(("cut", "limit_data", {"bytes": 4000}))


def _toxic_window(name: str, kind: str, seconds: float, **attrs: object) -> Scenario:
    """Push in the background; once the server holds its first records, put the toxic on
    every connection (open ones included) for ``seconds``, then take it off mid-run."""

    def run(h: Harness, outcome: Outcome, state: Path) -> None:
        box: dict[str, str] = {}
        h.proxy.clear()
        thread = threading.Thread(
            target=lambda: box.update(r=h.push(h.proxy.url(h.path), state, timeout_seconds=3.0)),
            daemon=True,
        )
        thread.start()
        if not h.wait_for(lambda: h.count("QuestionnaireResponse") >= 1, 120):
            outcome.error = "the run never reached the server"
        with h.toxics((name, kind, attrs)):
            time.sleep(seconds)
        thread.join(timeout=240)
        outcome.under_fault = box.get("r", "still running")
        h.finish(outcome, state, recover=outcome.under_fault != "ok")

    return run


#: Mid-run, every connection is reset (TCP RST) as soon as data flows, for 2 s.
reset_peer = _toxic_window("rst", "reset_peer", 2.0, timeout=0)

#: Mid-run, every connection stalls for 5 s (data dropped, never closed): the client's 3 s
#: read timeout fires on requests the server may already have committed.
timeouts = _toxic_window("stall", "timeout", 5.0, timeout=0)


def _through_shim(script: list[str]) -> Scenario:
    def run(h: Harness, outcome: Outcome, state: Path) -> None:
        h.shim.load(script)
        h.shim.write_path, h.shim.every_write = h.path, h.profile is not None
        outcome.under_fault = h.push(h.shim.url(h.path), state)
        injected = list(h.shim.injected)
        h.shim.load([])
        outcome.notes.append(f"injected {len(injected)}/{len(script)}")
        if len(injected) != len(script):
            outcome.error = "not every scripted response was injected"
        h.finish(outcome, state, recover=outcome.under_fault != "ok")

    return run


burst_503 = _through_shim(["503"] * 5)
burst_429 = _through_shim(["429"] * 5)


def server_killed(h: Harness, outcome: Outcome, state: Path) -> None:
    """SIGKILL the HAPI server mid-run, restart it on its H2 files, run again."""
    if h.server is None:
        outcome.error = "needs a server started by the harness"
        return
    server = h.server
    box: dict[str, str] = {}
    with h.toxics(("lag", "latency", {"latency": 150})):
        thread = threading.Thread(
            target=lambda: box.update(
                r=h.push(h.proxy.url(h.path), state, retry_deadline_seconds=15.0)
            ),
            daemon=True,
        )
        thread.start()
        if not h.wait_for(lambda: h.count("QuestionnaireResponse") >= 20, 120):
            outcome.error = "the run never reached the server"
        server.kill()
        outcome.notes.append("server SIGKILLed")
        thread.join(timeout=180)
    outcome.under_fault = box.get("r", "still running")
    started = time.monotonic()
    server.start()
    outcome.notes.append(f"restarted in {time.monotonic() - started:.0f}s")
    h.finish(outcome, state, recover=True)


def client_killed(h: Harness, outcome: Outcome, state: Path, *, kills: int = 3) -> None:
    """SIGKILL `alliance-fhir push assessments` mid-run (several times), then run it again."""
    results: list[str] = []
    with h.toxics(("lag", "latency", {"latency": 200})):
        for n in range(kills):
            before = h.count("QuestionnaireResponse")
            proc = h.cli(h.proxy.url(h.path), state, "push", "assessments", str(ASSESSMENTS))

            def progressed(b: int = before, p: subprocess.Popen[str] = proc) -> bool:
                return h.count("QuestionnaireResponse") > b or p.poll() is not None

            grew = h.wait_for(progressed, 60)
            if proc.poll() is None and grew:
                proc.send_signal(signal.SIGKILL)
                results.append("killed")
            code, _ = h.collect(proc, 60)
            if code == 0:
                results.append("finished before the kill")
                break
            outcome.notes.append(f"kill {n + 1}: exit {code}")
    outcome.under_fault = ", ".join(results)
    for what, path in (("assessments", ASSESSMENTS), ("goals", GOALS)):
        code, text = h.collect(h.cli(h.url, state, "push", what, str(path)), 300)
        outcome.notes.append(f"rerun {what}: exit {code}")
        if code != 0:
            outcome.error = f"rerun of push {what} failed: {text.strip().splitlines()[-1:]}"
    h.finish(outcome, state, recover=False)


#: name -> (fault description, scenario)
ALL: dict[str, tuple[str, Scenario]] = {
    "baseline": ("none (through the proxy)", baseline),
    "latency": ("toxiproxy latency 250±100 ms down, 50 ms up", latency),
    "reset-mid-response": ("toxiproxy limit_data 4 kB per connection", reset_mid_response),
    "reset-peer": ("toxiproxy reset_peer on every connection for 2 s mid-run", reset_peer),
    "timeout": ("toxiproxy timeout (stall) for 5 s mid-run; client timeout 3 s", timeouts),
    "503-burst": ("shim: 5 transactions answered 503", burst_503),
    "429-burst": ("shim: 5 transactions answered 429, Retry-After: 1", burst_429),
    "server-killed": ("HAPI SIGKILLed mid-run, restarted on its H2 files", server_killed),
    "client-killed": ("`alliance-fhir push` SIGKILLed mid-run 3 times, rerun", client_killed),
}


def state_deleted(h: Harness, outcome: Outcome, state: Path) -> None:
    """A whole push, the state file deleted (a new machine, a lost disk), the push again."""
    outcome.under_fault = h.push(h.url, state)
    state.unlink()
    outcome.notes.append("state file deleted")
    h.finish(outcome, state, recover=True)


#: The faults run against every EHR-like profile of the test server (``make ehr-matrix``,
#: tests/integration/matrix_ehr_faults.py); a lost answer is in test_ehr_profiles.py.
PROFILE_SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "503-burst": ("shim: 5 writes answered 503", burst_503),
    "client-killed": ALL["client-killed"],
    "state-deleted": ("the state file deleted between two runs", state_deleted),
}

#: The short subset `make test` runs (tests/integration/test_faults_subset.py).
SUBSET = ("latency", "reset-mid-response", "client-killed")


def run_scenario(
    h: Harness, name: str, registry: dict[str, tuple[str, Scenario]] | None = None
) -> Outcome:
    fault, scenario = (registry or ALL)[name]
    outcome = Outcome(name, fault)
    started = time.monotonic()
    state = h.work / f"state-{name}.sqlite3"
    try:
        h.fresh_server()
        scenario(h, outcome, state)
    except Exception as exc:  # a broken scenario is a row of the table
        outcome.error = f"{type(exc).__name__}: {exc}"
        if os.environ.get("FAULTS_DEBUG"):
            raise
    outcome.seconds = time.monotonic() - started
    return outcome


def _short(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(outcomes: list[Outcome]) -> str:
    header = ("scenario", "expected", "found", "duplicates", "lost", "state", "retries")
    rows = [(*header, "under fault", "")]
    for o in outcomes:
        c = o.check
        state = "-" if c is None else ("ok" if not c.state_errors else f"{len(c.state_errors)} bad")
        rows.append(
            (
                o.name,
                str(c.expected) if c else "-",
                str(c.found) if c else "-",
                str(c.duplicates) if c else "-",
                str(c.lost) if c else "-",
                state,
                str(o.retries),
                _short(o.under_fault or "-"),
                "survived" if o.survived else f"FAILED {o.error or ''}".strip(),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)
