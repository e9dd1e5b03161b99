"""The clinician's report of one client: gathered from the server, rendered by
``monitoring.report`` (pure HTML), saved, and screenshotted with headless Chromium.

The page shows the client only as a pseudonymous label (default ``Client <server id>``),
but it quotes what the client said (their written answers, their lowest-rated items): it is
written where the user asked and never logged. Both files are patient data at rest: 0600
from their first byte, in folders created 0700 (``private_files``), whatever the umask.

The SMART clinician view renders the same page through :meth:`Reports.report_html`, with
its per-alert controls and a notice added; there is one renderer for both.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from alliance_fhir.app.alert_writer import AlertWriter, OpenOnServer
from alliance_fhir.app.goal_pull import pull_goal_plans, resolve_patient
from alliance_fhir.app.patient_view import PatientReader
from alliance_fhir.config import Settings
from alliance_fhir.exceptions import ConfigError, RenderError
from alliance_fhir.fhir import FhirClient
from alliance_fhir.goals import Goal, Plan, target_text
from alliance_fhir.instruments.library import InstrumentLibrary
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.monitoring.alerts import PRIORITY
from alliance_fhir.monitoring.client_voice import client_comments, conversation_prompts
from alliance_fhir.monitoring.pull import score_response
from alliance_fhir.monitoring.report import (
    ReportGoal,
    ReportMilestone,
    render_report_html,
    series_for,
)
from alliance_fhir.monitoring.rules import Rule
from alliance_fhir.private_files import private_dir, write_private

__all__ = ["CHROMIUM_TIMEOUT", "Reports", "render_png", "report_goals"]

#: Seconds a Chromium screenshot may take before it is abandoned.
CHROMIUM_TIMEOUT = 90

_SEVERITY_OF_PRIORITY = {v: k for k, v in PRIORITY.items()}
_PLAN_STATUSES_SHOWN = ("active", "on-hold", "draft", "unknown")
_GOALS_HIDDEN = ("entered-in-error", "rejected")


def report_goals(plans: Iterable[Plan]) -> list[ReportGoal]:
    """The goals a report shows: those of current plans (active, on hold, draft; all plans
    when none is current), in the client's words, with agreement, targets and milestones.
    A Goal several plans link is shown once; entered-in-error and rejected goals are not."""
    plan_list = list(plans)
    current = [p for p in plan_list if str(p.status) in _PLAN_STATUSES_SHOWN] or plan_list
    out: list[ReportGoal] = []
    seen: set[str] = set()
    for plan in current:
        for goal in plan.goals:
            if str(goal.lifecycle_status) in _GOALS_HIDDEN or _goal_id(goal) in seen:
                continue
            seen.add(_goal_id(goal))
            agreement = goal.agreement
            milestones = [
                ReportMilestone(
                    description=m.client_words,
                    status=str(m.achievement_status or m.lifecycle_status),
                    due=min((t.due for t in m.targets if t.due is not None), default=None),
                )
                for m in goal.milestones
                if str(m.lifecycle_status) not in _GOALS_HIDDEN
            ]
            out.append(
                ReportGoal(
                    description=goal.client_words,
                    status=str(goal.lifecycle_status),
                    client_agreement=(
                        str(agreement.client.status) if agreement and agreement.client else None
                    ),
                    clinician_agreement=(
                        str(agreement.clinician.status)
                        if agreement and agreement.clinician
                        else None
                    ),
                    milestones=milestones,
                    achievement=str(goal.achievement_status) if goal.achievement_status else None,
                    targets=[target_text(t) for t in goal.targets],
                )
            )
    return out


def _goal_id(goal: Goal) -> str:
    return f"Goal/{goal.source_id}" if goal.source_id else goal.key


class Reports:
    """Builds and writes the report of one patient from what the server holds. ``now``
    gives the report's date (tests pin it)."""

    def __init__(
        self,
        client: FhirClient,
        library: InstrumentLibrary,
        settings: Settings,
        rules: Sequence[Rule],
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.client = client
        self.library = library
        self.settings = settings
        self.rules = list(rules)
        self._now = now or (lambda: datetime.now(UTC))
        self._rules_by_id = {r.id: r for r in self.rules}
        self._patients = PatientReader(client, library, settings)
        self._alerts = AlertWriter(client, library, settings, self.rules)

    def report_html(
        self,
        patient: str,
        *,
        label: str | None = None,
        alert_controls: Callable[[OpenOnServer], str] | None = None,
        notice: str = "",
    ) -> str:
        """The clinician's report of one patient as a self-contained HTML page.

        The client is shown only as ``label`` (default ``Client <server id>``): the page
        carries no name, no identifier of the person, but it does quote the client's answers.
        Write it where the user asked; never log it. ``alert_controls`` (the SMART view) gives
        the HTML placed beside each open alert; ``notice`` is shown above the alerts.
        """
        patient_id = resolve_patient(self.client, patient)
        now = self._now()
        info = self._patients.view(patient_id, now)
        by_id: dict[str, Instrument] = {i.id: i for i in self.library.all()}
        series = [
            series_for(by_id[instrument_id], checkins, self.rules)
            for instrument_id, checkins in sorted(info.series.items())
            if checkins
        ]
        pulled = pull_goal_plans(self.client, self.settings, patient_id)
        goals = report_goals(pulled.plans)
        not_shown = [f"not scored: {line}" for line in info.not_scored]
        not_shown += [f"not read: {problem}" for problem in pulled.problems]
        alerts: list[tuple[str, str, date | datetime | None]] = []
        controls: list[str] = []
        for entry in self._alerts.open_alerts(patient_id).get(patient_id, []):
            rule = self._rules_by_id.get(entry.alert.rule_id)
            priority = str((entry.task or {}).get("priority"))
            severity = rule.severity if rule else _SEVERITY_OF_PRIORITY.get(priority, "medium")
            alerts.append((severity, entry.alert.description or "", entry.alert.since))
            controls.append(alert_controls(entry) if alert_controls else "")
        scored = [(resp, score_response(resp).checkin) for resp in info.responses]
        return render_report_html(
            label or f"Client {patient_id}",
            series,
            goals,
            alerts,
            as_of=now.date(),
            not_shown=not_shown,
            prompts=conversation_prompts(scored),
            comments=client_comments(info.responses),
            alert_controls=controls,
            notice=notice,
        )

    def write_report(
        self, patient: str, out: Path, *, png: Path | None = None, label: str | None = None
    ) -> list[Path]:
        """Write the report to ``out`` (and a screenshot to ``png``); the paths written."""
        page = self.report_html(patient, label=label)
        private_dir(out.parent)
        write_private(out, page)
        written = [out]
        if png is not None:
            written.append(render_png(out, png))
        return written


# -- PNG ---------------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise ConfigError(
            "chromium is not installed or not on PATH; it is needed to render the report "
            "as PNG (Debian/Ubuntu: apt-get install chromium)"
        )
    return found


def render_png(
    html_path: Path, png_path: Path, *, window_size: tuple[int, int] = (1200, 1600)
) -> Path:
    """Screenshot the page at ``html_path`` into ``png_path`` with headless Chromium.

    Raises ``ConfigError`` when chromium is not on PATH and ``RenderError`` when it fails or
    writes no image. Nothing is fetched from the network: the page is self-contained and
    Chromium's background services are switched off.
    """
    binary = _chromium()
    page = html_path.resolve()
    target = png_path.resolve()
    private_dir(target.parent)
    if target.exists():
        target.unlink()
    width, height = window_size
    # Chromium writes with the process umask (0644): it shoots into its private (0700)
    # profile folder and we copy the image out as a 0600 file.
    with tempfile.TemporaryDirectory(prefix="alliance-chromium-") as profile:
        shot = Path(profile) / "screenshot.png"
        argv = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            f"--window-size={width},{height}",
            page.as_uri(),
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RenderError(f"chromium did not finish within {CHROMIUM_TIMEOUT}s") from exc
        if done.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RenderError(f"chromium exited with {done.returncode} and no screenshot: {tail}")
        write_private(target, shot.read_bytes())
    return target
