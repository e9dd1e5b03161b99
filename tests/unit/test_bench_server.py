"""The benchmarks' server is measured, not its heap (issue 15): a server the bench starts gets
a measurement heap, our local server collects its garbage before each measured run, and the
report names the JVM options the server really runs with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `bench` lives beside `src`, outside the package
    sys.path.insert(0, str(REPO))

from bench import report, run  # noqa: E402


def test_a_started_server_gets_the_measurement_heap_and_keeps_every_other_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ALLIANCE_FHIR_SERVER_JAVA_OPTS", raising=False)
    opts = run.server_env()["ALLIANCE_FHIR_SERVER_JAVA_OPTS"].split()
    default = report.default_java_opts().split()
    assert "-Xmx768m" in default  # the CI server's bounded heap
    assert opts[:2] == ["-Xms2g", "-Xmx2g"]
    assert opts[2:] == [o for o in default if not o.startswith(("-Xms", "-Xmx"))]


def test_options_set_by_the_caller_are_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_JAVA_OPTS", "-Xmx4g -XX:+UseParallelGC")
    assert run.server_env()["ALLIANCE_FHIR_SERVER_JAVA_OPTS"] == "-Xmx4g -XX:+UseParallelGC"


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:8095/fhir", 8095),
        ("http://localhost:8095/profiles/no-validation/fhir", 8095),
        ("http://127.0.0.1/fhir", 80),
        ("https://ehr.example.org:8443/fhir", None),
    ],
)
def test_only_a_server_on_this_machine_is_asked_to_collect(url: str, port: int | None) -> None:
    assert run.local_port(url) == port
    assert run.Server(url).collects is (port is not None)


def test_a_server_that_cannot_collect_is_said_once_and_measured_anyway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_RUNTIME_DIR", str(tmp_path))  # no server there
    server = run.Server("http://127.0.0.1:1/fhir")
    server.collect()
    server.collect()
    assert server.collects is False
    said = capsys.readouterr().err.splitlines()
    assert said == [
        "bench: no garbage collection between runs: fhir-server: not running on port 1 "
        "(start it with: " + str(REPO / "scripts" / "fhir-server") + " start --port 1)"
    ]


def test_the_report_names_the_options_the_server_runs_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_JAVA_OPTS", "-Xmx1g")
    # a process whose command line reads like the server's: options, then -cp
    code = "import time; time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-X", "utf8", "-c", code, "-cp", "server.jar"])
    try:
        (tmp_path / "server-8123.pid").write_text(f"{proc.pid}\n", encoding="utf-8")
        assert report.machine_info("HAPI", 8123).java_opts == f"-X utf8 -c {code}"
    finally:
        proc.kill()
        proc.wait()
    # no such server: what a start would use
    assert report.machine_info("HAPI", 8124).java_opts == "-Xmx1g"
    assert report.machine_info("HAPI").java_opts == "-Xmx1g"


def test_the_report_says_when_the_server_collected_before_each_run() -> None:
    machine = report.Machine("cpu", 2, 4.0, "Linux", "3.11", "java", "HAPI", "-Xmx2g")
    assert report.collected_note(machine) == ""
    machine.collected = True
    assert "a full garbage collection in it before each measured run" in report.collected_note(
        machine
    )
    assert machine.to_json()["collected"] is True


def test_a_server_to_pin_is_started_under_taskset_and_one_already_running_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []
    running = {"yes": False}

    def fake_run(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        if cmd[-3] == "status":
            return subprocess.CompletedProcess(cmd, 0 if running["yes"] else 1, "", "")
        return subprocess.CompletedProcess(cmd, 0, "ready\nhttp://127.0.0.1:8095/fhir\n", "")

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    assert run.start_server(8095, cpus="1") == ("http://127.0.0.1:8095/fhir", True)
    assert calls[-1][:4] == ["taskset", "-c", "1", "bash"]
    assert calls[-1][-3:] == ["start", "--port", "8095"]
    running["yes"] = True  # not started here: it would run on every CPU
    with pytest.raises(SystemExit, match="already runs on port 8095: the bench must start it"):
        run.start_server(8095, cpus="1")
    assert calls[-1][-3] == "status"
