"""Source fingerprints against the real HAPI server: an unchanged, synced file is not read;
every way a file can change is picked up (or correctly skipped).

"Read" is observed with a spy on the reader every assessment file goes through (it counts
file names; the real reader still runs), and with the run's own figures (``status``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

import alliance_fhir
import alliance_fhir.api as api_module
import alliance_fhir.app.goal_files as goal_files_module
from alliance_fhir.api import AllianceFhir, Report
from alliance_fhir.app import records as records_module
from alliance_fhir.cli import main
from alliance_fhir.config import Settings
from alliance_fhir.daemon.loop import Daemon, DaemonOptions, Step, configured_step
from alliance_fhir.daemon.metrics import DaemonMetrics
from alliance_fhir.sync.state import StateStore

from .clinickit import EXAMPLES, REPO, CountingTransport
from .conftest import expunge_everything

#: Two record files and the CSV (whose in-progress row gives a note on every run).
FILES = ("mrn-1001.yaml", "mrn-1002.yaml", "session-ratings.csv")


@pytest.fixture(scope="module")
def server(fhir_base_url: str) -> str:
    """The server with the example clinic's people, emptied once for this module; each test
    writes under an identifier namespace of its own, so what one changes never meets
    another."""
    expunge_everything(fhir_base_url)
    bundle = (EXAMPLES / "clinic" / "people.json").read_text()
    resp = httpx.post(
        fhir_base_url,
        content=bundle,
        headers={"Content-Type": "application/fhir+json"},
        timeout=300,
    )
    assert resp.status_code == 200, resp.text[:500]
    return fhir_base_url


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    for name in FILES:
        shutil.copy2(EXAMPLES / "clinic" / "assessments" / name, folder / name)
    return folder


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files the assessment reader was given, in order."""
    names: list[str] = []
    real = records_module.read_assessments  # type: ignore[attr-defined]  # re-exported import

    def spy(path: Path, **kwargs: Any) -> Any:
        names.append(path.name)
        return real(path, **kwargs)

    monkeypatch.setattr(records_module, "read_assessments", spy)
    return names


class Run:
    """Push the sources with one state file; each push's report, files read and requests."""

    def __init__(self, server: str, tmp: Path, sources: Path, reads: list[str]) -> None:
        self.server, self.sources, self.reads = server, sources, reads
        self.state = tmp / "state" / "state.sqlite3"
        self.namespace = f"http://fingerprint-test.example.org/{tmp.name}/identifier"
        self.transport = CountingTransport()

    def settings(self, **changes: Any) -> Settings:
        fields = {"identifier_namespace": self.namespace, **changes}
        return Settings(server_url=self.server, state_path=self.state, **fields)

    def push(self, *, full: bool = False, **changes: Any) -> tuple[Report, list[str]]:
        self.reads.clear()
        self.transport.reset()
        with AllianceFhir(self.settings(**changes), transport=self.transport) as api:
            report = api.push_assessments([self.sources], full=full)
        assert report.result is not None
        return report, sorted(self.reads)

    def status_sources(self) -> dict[str, int | float]:
        with AllianceFhir(self.settings()) as api:
            return api.status().sources


@pytest.fixture
def run(server: str, tmp_path: Path, sources: Path, reads: list[str]) -> Run:
    first = Run(server, tmp_path, sources, reads)
    report, read = first.push()
    assert report.ok, report.result and report.result.failures
    assert read == sorted(FILES)
    return first


def _total(report: Report) -> int:
    assert report.result is not None
    counts = report.result.counts
    return sum(counts[k] for k in ("created", "updated", "unchanged"))


def _edit_answer(path: Path, answer: str) -> str:
    """Set the first assessment's ``heard`` answer (same length as before); its key."""
    doc = yaml.safe_load(path.read_text())
    doc["assessments"][0]["answers"]["heard"] = answer
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(doc["assessments"][0]["key"])


def test_an_unchanged_resync_reads_no_file_sends_one_request_and_says_the_same(
    run: Run,
) -> None:
    before, _ = run.push()  # everything synced now: the state matches every file
    again, read = run.push()
    assert read == []
    assert again.result is not None
    assert dict(again.result.counts) == {"unchanged": _total(before)}
    assert again.result.files_skipped == 3
    assert run.transport.counts == {"GET": 1}  # the state-matches-server sample read
    assert again.skipped == before.skipped  # the CSV's "not scored" note is said again
    assert any("in-progress" in note for note in again.skipped)
    assert again.ok
    figures = run.status_sources()
    assert (figures["files"], figures["skipped"], figures["full"]) == (3, 3, 0)
    assert figures["records_skipped"] == _total(before)


def test_a_changed_file_is_read_alone_and_only_its_records_are_planned(run: Run) -> None:
    before, _ = run.push()
    _edit_answer(run.sources / "mrn-1001.yaml", "2")
    changed, read = run.push()
    assert read == ["mrn-1001.yaml"]
    assert changed.result is not None
    assert changed.result.counts["updated"] == 2  # the response and its score
    assert changed.result.counts["unchanged"] == _total(before) - 2
    assert changed.result.files_skipped == 2


def test_a_touched_file_is_skipped_its_content_is_what_counts(run: Run) -> None:
    run.push()
    path = run.sources / "mrn-1002.yaml"
    later = os.stat(path).st_mtime_ns + 3_600 * 10**9
    os.utime(path, ns=(later, later))
    report, read = run.push()
    assert read == []
    assert report.result is not None
    assert report.result.files_skipped == 3


@pytest.mark.parametrize("how", ["in place", "replaced by another file"])
def test_a_file_with_the_same_size_and_mtime_but_other_content_is_read(run: Run, how: str) -> None:
    run.push()
    path = run.sources / "mrn-1001.yaml"
    st = os.stat(path)
    text = path.read_text().replace('heard: "5"', 'heard: "2"', 1)
    assert len(text) == st.st_size
    assert text != path.read_text()
    if how == "in place":
        path.write_text(text)
    else:
        other = path.with_suffix(".new")
        other.write_text(text)
        os.replace(other, path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (os.stat(path).st_size, os.stat(path).st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    report, read = run.push()
    assert read == ["mrn-1001.yaml"]
    assert report.result is not None
    assert report.result.counts["updated"] == 2


def test_a_renamed_file_is_read_once_and_writes_nothing(run: Run) -> None:
    before, _ = run.push()
    (run.sources / "mrn-1002.yaml").rename(run.sources / "renamed.yaml")
    renamed, read = run.push()
    assert read == ["renamed.yaml"]
    assert renamed.result is not None
    assert dict(renamed.result.counts) == {"unchanged": _total(before)}
    assert run.transport.writes == 0
    _, read = run.push()
    assert read == []


def test_a_truncated_file_is_read_and_its_records_stay_on_the_server(
    run: Run, fhir_http: httpx.Client
) -> None:
    run.push()
    path = run.sources / "mrn-1002.yaml"
    saved = path.read_bytes()
    key = yaml.safe_load(saved)["assessments"][0]["key"]
    path.write_bytes(b"")
    _, read = run.push()
    assert read == ["mrn-1002.yaml"]
    assert run.transport.writes == 0  # no deletes: records leave the server only by hand
    found = fhir_http.get(
        "/QuestionnaireResponse", params={"identifier": f"{run.namespace}/assessment|{key}"}
    )
    assert len(found.raise_for_status().json().get("entry") or []) == 1
    path.write_bytes(saved)
    restored, read = run.push()
    assert read == ["mrn-1002.yaml"]
    assert run.transport.writes == 0
    assert restored.ok


def _overlay_dir(tmp: Path) -> dict[str, Any]:
    folder = tmp / "overlays"
    folder.mkdir()
    (folder / "README.txt").write_text("licensee overlays go here\n")
    return {"overlay_dir": folder}


def _changed_instrument(tmp: Path) -> dict[str, Any]:
    folder = tmp / "clinic-mappings"
    folder.mkdir()
    text = (REPO / "mappings" / "instruments" / "srs.yaml").read_text()
    (folder / "srs.yaml").write_text(text.replace("\ntitle: ", "\ntitle: Clinic ", 1))
    return {"mappings_dir": folder}


def _namespace(_: Path) -> dict[str, Any]:
    return {"identifier_namespace": "http://fingerprint-test.example.org/identifier"}


def _patient_map(_: Path) -> dict[str, Any]:
    return {"patient_map": {"Patient/elsewhere-1": "http://example-clinic.org/mrn|MRN-1001"}}


@pytest.mark.parametrize(
    "change",
    [_overlay_dir, _changed_instrument, _namespace, _patient_map],
    ids=["overlay", "instrument definition", "namespace", "mapping setting"],
)
def test_a_change_of_what_files_map_to_rereads_every_file(
    run: Run, tmp_path: Path, change: Callable[[Path], dict[str, Any]]
) -> None:
    settings = change(tmp_path)
    report, read = run.push(**settings)
    assert read == sorted(FILES)
    assert report.result is not None
    assert report.result.files_skipped == 0
    _, read = run.push(**settings)
    assert read == []  # and under the new context, skipped again


def test_an_identical_copy_of_a_definition_is_no_change(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "clinic-mappings"
    folder.mkdir()
    shutil.copy(REPO / "mappings" / "instruments" / "srs.yaml", folder / "srs.yaml")
    run.push()
    _, read = run.push(mappings_dir=folder)
    assert read == []


def test_a_new_version_of_the_tool_rereads_every_file(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run.push()
    monkeypatch.setattr(alliance_fhir, "__version__", "99.0.0")
    _report, read = run.push()
    assert read == sorted(FILES)
    assert run.transport.writes == 0


def test_a_deleted_state_file_rereads_every_file_and_duplicates_nothing(run: Run) -> None:
    before, _ = run.push()
    for leftover in run.state.parent.iterdir():
        leftover.unlink()
    report, read = run.push()
    assert read == sorted(FILES)
    assert report.result is not None
    assert report.result.counts["created"] == 0
    assert _total(report) == _total(before)


def test_full_reads_and_plans_every_file(run: Run) -> None:
    before, _ = run.push()
    report, read = run.push(full=True)
    assert read == sorted(FILES)
    assert report.result is not None
    assert dict(report.result.counts) == {"unchanged": _total(before)}
    assert report.result.files_skipped == 0
    assert run.status_sources()["full"] == 1


def test_a_record_that_failed_last_time_is_retried_from_its_unchanged_file(
    run: Run, fhir_http: httpx.Client
) -> None:
    mrn = "MRN-FP-9001"  # not on the server until the test creates it
    doc = yaml.safe_load((run.sources / "mrn-1001.yaml").read_text())
    doc["defaults"]["patient"]["value"] = mrn
    doc["assessments"] = doc["assessments"][:1]
    doc["assessments"][0]["key"] = f"fp-{mrn}"
    (run.sources / "unknown.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    first, read = run.push()
    assert read == ["unknown.yaml"]
    assert first.result is not None
    assert first.result.counts["rejected"] == 2  # no such patient yet
    again, read = run.push()
    assert read == ["unknown.yaml"]  # its records are not synced: read again
    assert not again.ok
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://example-clinic.org/mrn", "value": mrn}],
    }
    made = fhir_http.post(
        "/Patient", json=patient, headers={"Content-Type": "application/fhir+json"}
    )
    assert made.status_code == 201, made.text[:300]
    fixed, read = run.push()
    assert read == ["unknown.yaml"]
    assert fixed.result is not None
    assert fixed.result.counts["created"] == 2
    assert fixed.ok
    _, read = run.push()
    assert read == []


def test_the_daemon_cycle_on_unchanged_sources_parses_nothing(run: Run) -> None:
    settings = run.settings(assessments=[run.sources])
    with AllianceFhir(settings) as api:
        daemon = Daemon(
            api,
            DaemonOptions(),
            steps=[Step("configured", configured_step)],
            metrics=DaemonMetrics(ready_window=600),
        )
        run.reads.clear()
        first = daemon.run_cycle()
        read_first = sorted(run.reads)
        run.reads.clear()
        second = daemon.run_cycle()
    assert first.ok
    assert second.ok
    assert read_first == []  # the push in the fixture already synced every file
    assert run.reads == []
    assert second.steps[0].counts == first.steps[0].counts
    assert set(second.steps[0].counts) == {"unchanged"}


def test_the_daemon_cycle_skips_unchanged_goal_files_too(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    goals = tmp_path / "goals"
    shutil.copytree(EXAMPLES / "goals", goals)
    loaded: list[str] = []
    real = goal_files_module.load_plans

    def spy(path: Path) -> Any:
        loaded.append(path.name)
        return real(path)

    monkeypatch.setattr(goal_files_module, "load_plans", spy)
    settings = run.settings(assessments=[run.sources], goals=[goals])
    with AllianceFhir(settings) as api:
        daemon = Daemon(
            api,
            DaemonOptions(),
            steps=[Step("configured", configured_step)],
            metrics=DaemonMetrics(ready_window=600),
        )
        first = daemon.run_cycle()  # the goals are created
        read_first = sorted(loaded)
        loaded.clear()
        second = daemon.run_cycle()
    assert first.ok
    assert second.ok
    assert len(read_first) == 4
    assert loaded == []  # every goal file unchanged and synced: none parsed
    assert set(second.steps[0].counts) == {"unchanged"}


@pytest.fixture
def cli_env(run: Run, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("ALLIANCE_FHIR_SERVER_URL", run.server)
    monkeypatch.setenv("ALLIANCE_FHIR_STATE_PATH", str(run.state))
    monkeypatch.delenv("ALLIANCE_FHIR_CONFIG", raising=False)
    return run


def test_the_cli_says_how_many_files_were_skipped(cli_env: Run) -> None:
    cli = CliRunner()
    args = ["push", "assessments", str(cli_env.sources)]
    cli.invoke(main, args)
    result = cli.invoke(main, args)
    assert result.exit_code == 0, result.stderr[-500:]
    [line] = [x for x in result.stdout.splitlines() if x.startswith("run ")]
    assert ", conflict 0, rejected 0 (0 bundles, " in line
    assert line.endswith("s); 3 files unchanged (skipped)")
    full = cli.invoke(main, [*args, "--full"])
    assert full.exit_code == 0
    assert "files unchanged (skipped)" not in full.stdout
    status = cli.invoke(main, ["status"])
    assert status.exit_code == 0
    assert "source files last run (--full): 3, 0 unchanged (skipped)" in status.stdout


def test_sync_skips_unchanged_goal_files_reads_a_changed_one_and_full_reads_all(
    run: Run, tmp_path: Path
) -> None:
    goals = tmp_path / "goals"
    shutil.copytree(EXAMPLES / "goals", goals)
    settings = run.settings(assessments=[run.sources], goals=[goals])

    def sync(full: bool = False) -> Report:
        run.transport.reset()
        with AllianceFhir(settings, transport=run.transport) as api:
            report = api.sync(full=full)
        assert report.ok, (report.problems, report.result and report.result.failures)
        assert report.result is not None
        return report

    first = sync()  # the goals are created; the assessment files are skipped
    assert first.result is not None
    assert first.result.files_skipped == 3
    again = sync()
    assert again.result is not None
    assert dict(again.result.counts) == {"unchanged": _total(first)}
    assert again.result.files_skipped == 3 + 4
    assert run.transport.writes == 0
    plan = goals / "plan-mrn-1002.yaml"
    plan.write_text(plan.read_text() + "# edited: other bytes, the same plan\n")
    edited = sync()
    assert edited.result is not None
    assert edited.result.files_skipped == 3 + 3
    assert dict(edited.result.counts) == {"unchanged": _total(first)}
    full = sync(full=True)
    assert full.result is not None
    assert full.result.files_skipped == 0
    assert dict(full.result.counts) == {"unchanged": _total(first)}


def test_the_row_of_a_deleted_file_is_pruned_and_a_renamed_ones_replaced(run: Run) -> None:
    def keys() -> set[str]:
        with StateStore(run.state) as store:
            return set(store.source_fingerprints())

    before = keys()
    assert len(before) == 3
    (run.sources / "mrn-1002.yaml").unlink()
    (run.sources / "mrn-1001.yaml").rename(run.sources / "renamed.yaml")
    report, read = run.push()
    assert read == ["renamed.yaml"]
    assert report.ok
    after = keys()
    assert len(after) == 2
    assert len(after & before) == 1  # the CSV's; the other is the renamed file's new row
    _, read = run.push()
    assert read == []


def test_push_goals_skips_unchanged_goal_files_unless_full(cli_env: Run, tmp_path: Path) -> None:
    goals = tmp_path / "goals"
    shutil.copytree(EXAMPLES / "goals", goals)
    cli = CliRunner()
    args = ["push", "goals", str(goals)]
    assert cli.invoke(main, args).exit_code == 0
    again = cli.invoke(main, args)
    assert again.exit_code == 0, again.stderr[-500:]
    [line] = [x for x in again.stdout.splitlines() if x.startswith("run ")]
    assert line.endswith("s); 4 files unchanged (skipped)")
    full = cli.invoke(main, [*args, "--full"])
    assert full.exit_code == 0
    assert "files unchanged (skipped)" not in full.stdout


def test_a_changed_row_is_the_only_record_mapped_and_sent_and_sync_builds_no_instrument(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per-record reuse (``app.record_reuse``) and the instruments' fingerprint
    (``app.instrument_fingerprint``), end to end."""
    before, _ = run.push()
    mapped: list[str] = []
    real = records_module.assessment_records

    def spy(assessments: Any, *args: Any) -> Any:
        assessments = list(assessments)
        mapped.extend(a.key for a in assessments)
        return real(assessments, *args)

    monkeypatch.setattr(records_module, "assessment_records", spy)
    path = run.sources / "session-ratings.csv"
    text = path.read_text()
    assert ",MRN-1002,1245319599,6.6,6.3,6.8,6.3\n" in text
    path.write_text(text.replace(",6.6,6.3,6.8,6.3\n", ",6.6,6.3,6.8,6.4\n", 1))
    changed, read = run.push()
    assert read == ["session-ratings.csv"]
    assert mapped == ["1002-s01-ors", "1004-s04-srs"]  # the changed row; the in-progress one
    assert changed.result is not None
    assert changed.result.counts["updated"] == 2  # its response and its score
    assert changed.result.counts["unchanged"] == _total(before) - 2
    assert changed.skipped == before.skipped
    built: list[int] = []
    real_build = api_module.instrument_records  # type: ignore[attr-defined]  # imported there

    def counting_build(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(api_module, "instrument_records", counting_build)
    settings = run.settings(assessments=[run.sources])
    for _ in range(2):
        run.transport.reset()
        with AllianceFhir(settings, transport=run.transport) as api:
            synced = api.sync(labels_only=True)
        assert synced.ok, synced.result and synced.result.failures
    assert built == [1]  # built and published by the first sync only
    assert run.transport.counts == {"GET": 1}
    assert synced.result is not None
    assert synced.result.files_skipped == 3


class ThreadsTransport(CountingTransport):
    """Counts requests and notes which thread asked for the CapabilityStatement."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata_threads: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/metadata"):
            self.metadata_threads.append(threading.current_thread().name)
        return super().handle_request(request)


def test_only_a_first_sync_asks_for_the_statement_early(
    server: str, tmp_path: Path, sources: Path
) -> None:
    """A first sync (no record in its state) will write: it reads /metadata in a thread of
    its own while it builds the instruments. A later sync that must build the instruments
    again (a state from before their fingerprint, or kept by pushes) but finds them and every
    file unchanged still sends one request, as an unchanged re-sync always does."""
    state = tmp_path / "state.sqlite3"
    namespace = f"http://fingerprint-test.example.org/{tmp_path.name}/early/identifier"
    settings = Settings(
        server_url=server,
        state_path=state,
        identifier_namespace=namespace,
        assessments=[sources],
    )
    first = ThreadsTransport()
    with AllianceFhir(settings, transport=first) as api:
        report = api.sync(labels_only=True)
    assert report.ok, report.result and report.result.failures
    assert [name.split("_")[0] for name in first.metadata_threads] == ["prefetch"]

    with StateStore(state) as store:
        store.set_instruments_fingerprint({})  # what a state from before it holds
    later = ThreadsTransport()
    with AllianceFhir(settings, transport=later) as api:
        again = api.sync(labels_only=True)
    assert again.ok
    assert again.result is not None
    assert again.result.counts["created"] == 0
    assert later.counts == {"GET": 1}
    assert later.metadata_threads == []
