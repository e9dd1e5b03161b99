"""The clinician report: a safe self-contained page, and a screenshot that shows the chart.

The PNG test needs Chromium and FAILS without it (CI installs ``chromium``).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from monitoringkit import (
    default_rules,
    falling_srs,
    falling_trc,
    instrument,
    pixels_near,
    read_png,
    totals,
    when,
)

from alliance_fhir.app import reports
from alliance_fhir.app.reports import render_png
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.monitoring.evaluate import evaluate
from alliance_fhir.monitoring.report import (
    FLAG_COLOUR,
    TOTAL_COLOUR,
    ReportGoal,
    ReportMilestone,
    render_report_html,
    series_for,
)

GOALS = [
    ReportGoal(
        "Go back to work without <panic> & dread",
        "active",
        client_agreement="agree",
        clinician_agreement="pending",
        milestones=[
            ReportMilestone("Walk to the office once", "achieved", date(2024, 1, 20)),
            ReportMilestone("Spend an hour there", "in-progress", date(2024, 2, 15)),
        ],
        achievement="improving",
    ),
    ReportGoal("Sleep through most nights", "proposed", "disagree", None),
]


def falling_client_html(label: str = "P-7") -> str:
    rules = default_rules()
    srs = series_for(instrument("srs"), falling_srs(), rules)
    trc = series_for(instrument("trc-client"), falling_trc(), rules)
    alerts = [
        (t.severity, t.message, when(5))
        for inst, series in (("srs", falling_srs()), ("trc-client", falling_trc()))
        for t in evaluate(
            rules,
            instrument(inst),
            series,
            patient_key=label,
            care_plan_active=True,
            as_of=when(6),
        )
    ]
    return render_report_html(label, [srs, trc], GOALS, alerts, as_of=date(2024, 2, 19))


def rgb(colour: str) -> tuple[int, int, int]:
    value = int(colour.lstrip("#"), 16)
    return value >> 16, (value >> 8) & 0xFF, value & 0xFF


def test_page_is_self_contained_escaped_and_deterministic() -> None:
    page = falling_client_html("<script>alert(1)</script>")
    assert page == falling_client_html("<script>alert(1)</script>")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Go back to work without &lt;panic&gt; &amp; dread" in page
    # no external assets, no scripts
    assert not re.search(r"""(src|href)=|url\(|@import|<link|<img|<iframe""", page)
    assert page.count("<svg") == 2


def test_page_shows_alerts_first_then_charts_then_goals() -> None:
    page = falling_client_html()
    alerts, srs, trc, goals = (
        page.index("Open alerts"),
        page.index("Session Rating Scale"),
        page.index("Therapeutic Relationship Check-in"),
        page.index("<h2>Goals</h2>"),
    )
    assert alerts < srs < trc < goals
    # the most severe alert comes first
    assert page.index('class="alert high"') < page.index('class="alert medium"')
    # cutoff line dashed, flagged points red, one per flagged check-in
    assert 'stroke-dasharray="7 5"' in page
    assert page.count(f'fill="{FLAG_COLOUR}"') == 2 + 4
    assert "cutoff 36" in page
    # goals: the client's words, agreement badges, milestone progress
    assert 'class="badge agree">Client: agrees' in page
    assert 'class="badge pending">Clinician: not yet decided' in page
    assert 'class="badge disagree">Client: disagrees' in page
    assert 'class="badge unknown">Clinician: not recorded' in page
    assert "1 of 2 steps done" in page
    assert "due 2024-02-15" in page


def test_empty_report_still_renders() -> None:
    page = render_report_html("P-0", [series_for(instrument("ors"), [])], [], [])
    assert "No open alerts." in page
    assert "No check-ins yet" in page
    assert "No collaborative goals recorded." in page


def test_unscorable_checkins_appear_as_crosses_not_points() -> None:
    series = series_for(instrument("srs"), totals([38.0, None, 30.0]), default_rules())
    page = render_report_html("P-1", [series], [], [])
    assert "not scorable</title></path>" in page
    assert page.count("<circle") == 2


def test_png_shows_the_chart_with_red_flagged_points(tmp_path: Path) -> None:
    html_path = tmp_path / "report.html"
    png_path = tmp_path / "report.png"
    html_path.write_text(falling_client_html(), encoding="utf-8")
    assert render_png(html_path, png_path) == png_path.resolve()

    width, height, rows = read_png(png_path)
    assert (width, height) == (1200, 1600)
    red = pixels_near(rows, width, rgb(FLAG_COLOUR), tolerance=12)
    line = pixels_near(rows, width, rgb(TOTAL_COLOUR), tolerance=12)
    assert len(red) > 6 * 80, "flagged markers (r=8) should paint hundreds of red pixels"
    assert len(line) > 1000, "the dark total lines should be visible"
    # the red markers sit on the total lines (within 16 px of a line pixel)
    near_line = {(x // 16, y // 16) for x, y in line}
    on_line = [
        (x, y)
        for x, y in red
        if any((x // 16 + dx, y // 16 + dy) in near_line for dx in (-1, 0, 1) for dy in (-1, 0, 1))
    ]
    assert len(on_line) > 6 * 80  # six flagged markers; the rest are the legend's red dots
    assert len(on_line) >= 0.7 * len(red)
    # and the page is not blank: plenty of distinct colours
    distinct = {row[i : i + 3] for row in rows[::8] for i in range(0, 3 * width, 24)}
    assert len(distinct) > 50


def test_missing_chromium_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports.shutil, "which", lambda _: None)
    page = tmp_path / "r.html"
    page.write_text("<p>x</p>", encoding="utf-8")
    with pytest.raises(ConfigError, match="chromium is not installed"):
        render_png(page, tmp_path / "r.png")


def test_targets_and_records_not_shown_are_on_the_page() -> None:
    goal = ReportGoal("Stay sober", "active", targets=["Days sober: at least 30 d within 12 wk"])
    page = render_report_html(
        "Client 7",
        [],
        [goal],
        [],
        not_shown=["not scored: QuestionnaireResponse/9: heard: coding from urn:x, not ours"],
    )
    assert "Target: Days sober: at least 30 d within 12 wk" in page
    assert "Not shown (1)" in page
    assert "not scored: QuestionnaireResponse/9: heard: coding from urn:x, not ours" in page
    assert "Not shown" not in render_report_html("Client 7", [], [goal], [])
