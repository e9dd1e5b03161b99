"""Everything the CLI prints about a result: tables, run summaries, the monitor line.

Output that carries patient data (a plan, a score table) goes to stdout, which the user
redirects where they choose; problems and notes go to stderr, one line each.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from alliance_fhir import log as alog
from alliance_fhir.api import Report, ScoredAssessment, Status
from alliance_fhir.api.workers import QueueStatus
from alliance_fhir.exceptions import Problem

if TYPE_CHECKING:
    from alliance_fhir.api import MonitorResult

#: Terminal escape sequences (CSI ``ESC [``, OSC ``ESC ]`` up to BEL/ST, other ``ESC x``), then
#: any remaining C0/C1 control character but tab and newline.
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|\x9b[0-?]*[ -/]*[@-~]"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` without control or escape sequences: text edited in the EHR (a goal title, a
    server message) must not retitle, recolour or clear the user's terminal."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


class _CleanConsole(Console):
    """A rich console that strips control sequences from every string it is asked to print
    (rich's own styling is added after, so it still works)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(clean(o) if isinstance(o, str) else o for o in objects), **kwargs)


def echo(text: str) -> None:
    """A block of text on stdout as is (no wrapping, no markup), control sequences stripped."""
    click.echo(clean(text))


# Wide enough for tables when piped or captured (no terminal to measure).
out = _CleanConsole(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = _CleanConsole(stderr=True, highlight=False, soft_wrap=True)


def problems(found: Sequence[Problem]) -> None:
    """One ``error:`` line per input problem on stderr."""
    for problem in found:
        err.print(f"error: {problem}", markup=False)


def notes(skipped: Sequence[str]) -> None:
    """One ``note:`` line per item left out on purpose (not an error)."""
    for note in skipped:
        err.print(f"note: {note}", markup=False)


def print_report(report: Report, *, dry_run: bool = False) -> None:
    """A push/publish/sync outcome: notes and problems, then files, plan or run summary."""
    notes(report.skipped)
    problems(report.problems)
    if report.written:
        out.print(
            f"wrote {len(report.written)} bundle file(s) to {report.written[0].parent}",
            markup=False,
        )
        return
    plan = ", ".join(f"{k} {v}" for k, v in sorted(report.plan.items())) or "nothing to do"
    if dry_run or report.result is None:
        out.print(f"plan: {plan}", markup=False)
        return
    res = report.result
    summary = ", ".join(f"{k} {v}" for k, v in res.summary().items())
    skipped = f"; {res.files_skipped} files unchanged (skipped)" if res.files_skipped else ""
    out.print(
        f"run {res.run_id}: {summary} ({res.bundles} bundles, {res.seconds:.1f}s){skipped}",
        markup=False,
    )
    for failure in res.failures:
        err.print(f"failed: {failure}", markup=False)
    notes(res.notes)


def print_monitor(result: MonitorResult) -> None:
    """The run's one summary line (not-scored and withdrawn responses counted, so a run that
    scored nothing says so), the way it pulled, then one stderr line per response not scored
    and per failure."""
    alerts = ", ".join(f"{k} {v}" for k, v in sorted(result.alerts.items())) or "none"
    withdrawn = f", {result.withdrawn} withdrawn" if result.withdrawn else ""
    out.print(
        f"monitor: pulled {result.pulled} responses ({result.external} completed "
        f"elsewhere scored, {len(result.not_scored)} not scored{withdrawn}); "
        f"{len(result.patients)} patients evaluated; alerts: {alerts}",
        markup=False,
    )
    if result.pulled_via:
        out.print(result.pulled_via, markup=False)
    if result.alert_note:
        out.print(f"alerts written as: {result.alert_note}", markup=False)
    for line in result.not_scored:
        err.print(f"not scored: {line}", markup=False)
    for line in result.failures:
        err.print(f"failed: {line}", markup=False)


def score_table(scored: Sequence[ScoredAssessment]) -> Table:
    table = Table("assessment", "instrument", "authored", "total", "subscales", "band", "note")
    for item in scored:
        sc = item.scores
        total = "-" if sc.total.value is None else f"{sc.total.value:g}"
        subs = ", ".join(
            f"{s.id} {'-' if s.value is None else f'{s.value:g}'}" for s in sc.subscales
        )
        note = sc.total.reason or ("below cutoff" if sc.below_cutoff else "")
        table.add_row(
            *map(
                clean,
                (
                    item.assessment.key,
                    item.instrument.id,
                    item.assessment.authored.isoformat(),
                    total,
                    subs,
                    sc.band.label if sc.band else "",
                    note,
                ),
            )
        )
    return table


def print_status(st: Status) -> None:
    """Recent runs as a table, then record counts, conflicts and dead letters (scrubbed)."""
    table = Table("run", "command", "started (UTC)", "outcome", "counts")
    for run in st.runs:
        started = datetime.fromtimestamp(run.started, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()) if v)
        table.add_row(
            *map(clean, (run.run_id, run.command, started, run.outcome or "running", counts))
        )
    out.print(table)
    records = ", ".join(f"{k} {v}" for k, v in sorted(st.records.items())) or "none"
    out.print(f"records: {records}", markup=False)
    out.print(f"conflicts: {len(st.conflicts)}", markup=False)
    for c in st.conflicts:
        what = (
            f"changed on the server and by us: {', '.join(c.conflict_fields)}"
            if c.conflict_fields
            else "changed on the server since our last write"
        )
        out.print(
            f"  conflict: {c.kind}/{c.key} ({c.resource_type}/{c.server_id}) {what}; "
            "not overwritten",
            markup=False,
        )
    out.print(f"dead letters: {len(st.dead_letters)}", markup=False)
    if st.sources:
        out.print(sources_line(st.sources), markup=False)
    for d in st.dead_letters:
        status_text = f" HTTP {d.http_status}" if d.http_status else ""
        out.print(
            f"  rejected: {d.kind}/{d.key}{status_text}: {alog.scrub(d.reason)}", markup=False
        )


def print_queue(q: QueueStatus) -> None:
    """The shared work queue and the live workers (``status`` with several daemons): counts,
    hosts and pids only."""
    c = q.counts
    out.print(f"work queue: {c.pending} pending, {c.leased} leased, {c.done} done", markup=False)
    out.print(f"workers: {len(q.workers)} live", markup=False)
    for w in q.workers:
        out.print(
            f"  worker {clean(w.worker_id)} ({w.state}): {w.held} leases held, "
            f"heartbeat {w.seconds_since_heartbeat:.0f}s ago",
            markup=False,
        )


def sources_line(figures: Mapping[str, int | float]) -> str:
    """The last fingerprinted run's source files, one line (``status``, ``doctor``)."""
    full = " (--full)" if figures.get("full") else ""
    return (
        f"source files last run{full}: {int(figures.get('files', 0))}, "
        f"{int(figures.get('skipped', 0))} unchanged (skipped), "
        f"{int(figures.get('records_skipped', 0))} records not re-read"
    )
