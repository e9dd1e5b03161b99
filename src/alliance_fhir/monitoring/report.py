"""The clinician's alliance report: one self-contained HTML page, and a PNG of it.

The page has no scripts and no external assets: charts are inline SVG drawn here. From top to
bottom: the open alerts (most severe first), one chart per instrument (the total as a dark
line, subscales as lighter lines, the cutoff dashed, check-ins that fired a rule marked red,
unscorable check-ins as grey crosses on the axis), then the collaborative goals with their
milestones and who agrees with them.

Every piece of text is escaped, and nothing depends on the clock or the environment: the same
input gives the same bytes. ``patient_label`` is whatever pseudonymous label the caller
chooses; the report prints nothing else about the client.

Pure: no I/O. The screenshot of a saved page (headless Chromium) is taken by
``alliance_fhir.app.reports.render_png``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from alliance_fhir.exceptions import RenderError
from alliance_fhir.instruments.schema import Instrument, ScoreDef
from alliance_fhir.monitoring.client_voice import ClientComment, ConversationPrompt
from alliance_fhir.monitoring.evaluate import CheckIn, flagged_points
from alliance_fhir.monitoring.rules import Rule

__all__ = [
    "FLAG_COLOUR",
    "TOTAL_COLOUR",
    "RenderError",
    "ReportGoal",
    "ReportMilestone",
    "ReportSeries",
    "render_report_html",
    "series_for",
]

#: Colour of a flagged check-in's marker, and of the total's line (tests look for them).
FLAG_COLOUR = "#dc2626"
TOTAL_COLOUR = "#1e3a8a"
_SUB_COLOURS = ("#60a5fa", "#34d399", "#f59e0b", "#a78bfa", "#f472b6", "#2dd4bf")
_CUTOFF_COLOUR = "#4b5563"
_MUTED = "#9ca3af"


# -- input -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportMilestone:
    """One small step towards a goal. ``status`` is free (e.g. ``achieved``, ``active``)."""

    description: str
    status: str
    due: date | None = None


@dataclass(frozen=True)
class ReportGoal:
    """A collaborative goal in the client's words, and each party's agreement with it
    (``agree``, ``disagree``, ``pending`` or None when not recorded)."""

    description: str
    status: str
    client_agreement: str | None = None
    clinician_agreement: str | None = None
    milestones: Sequence[ReportMilestone] = ()
    achievement: str | None = None
    targets: Sequence[str] = ()


@dataclass(frozen=True)
class ReportSeries:
    """One instrument's check-ins for the chart.

    ``flagged`` maps assessment key to the labels of the rules that fired on it.
    ``subscale_labels`` names the subscales to draw (id -> label), in drawing order.
    ``y_range`` is the possible range of the total (the chart's vertical extent).
    """

    instrument: str
    title: str
    checkins: Sequence[CheckIn]
    y_range: tuple[float, float]
    cutoff: float | None = None
    cutoff_label: str | None = None
    total_label: str = "Total"
    subscale_labels: Mapping[str, str] = field(default_factory=dict)
    flagged: Mapping[str, Sequence[str]] = field(default_factory=dict)


def _score_range(instrument: Instrument, sdef: ScoreDef) -> tuple[float, float]:
    items = instrument.score_items(sdef)
    ranges = [instrument.item_range(i) for i in items]
    if sdef.method == "sum":
        return sum(r[0] for r in ranges), sum(r[1] for r in ranges)
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def series_for(
    instrument: Instrument, checkins: Iterable[CheckIn], rules: Iterable[Rule] = ()
) -> ReportSeries:
    """A chart series for ``instrument``: its range, cutoff and subscales, with the check-ins
    flagged by ``rules`` (see ``evaluate.flagged_points``)."""
    ordered = sorted(checkins, key=lambda c: (c.authored, c.key))
    rule_list = [r for r in rules if r.instrument == instrument.id]
    labels = {r.id: r.label for r in rule_list}
    flagged = {
        key: tuple(labels[i] for i in ids)
        for key, ids in flagged_points(rule_list, instrument, ordered).items()
    }
    scoring = instrument.scoring
    cutoff = scoring.cutoff
    return ReportSeries(
        instrument=instrument.id,
        title=instrument.title,
        checkins=ordered,
        y_range=_score_range(instrument, scoring.total),
        cutoff=cutoff.value if cutoff else None,
        cutoff_label=cutoff.meaning if cutoff else None,
        total_label=scoring.total.label,
        subscale_labels={s.id: s.label for s in scoring.subscales},
        flagged=flagged,
    )


# -- formatting --------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _n(value: float) -> str:
    """A number as a clinician writes it: no trailing zeros, at most 2 decimals."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _c(value: float) -> str:
    """An SVG coordinate (1 decimal: stable and compact)."""
    return f"{value:.1f}"


def _day(when: date | datetime | None) -> str:
    if when is None:
        return ""
    return (when.date() if isinstance(when, datetime) else when).isoformat()


def _nice_step(span: float) -> float:
    for step in (0.1, 0.2, 0.25, 0.5, 1, 2, 2.5, 5, 10, 20, 25, 50, 100):
        if span / step <= 8:
            return step
    return float(10 ** math.ceil(math.log10(span / 8)))


# -- the chart ---------------------------------------------------------------------------

_W, _H = 1080, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 24, 24, 56
_INSET = 36  # room between the axes and the first and last check-in


def _chart(series: ReportSeries) -> str:
    lo, hi = series.y_range
    if hi <= lo:
        hi = lo + 1
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    points = list(series.checkins)
    n = len(points)

    def x_at(i: int) -> float:
        inner = plot_w - 2 * _INSET
        return _LEFT + plot_w / 2 if n == 1 else _LEFT + _INSET + inner * i / (n - 1)

    def y_at(v: float) -> float:
        v = min(max(v, lo), hi)
        return _TOP + plot_h * (hi - v) / (hi - lo)

    title = f"{series.title}: {series.total_label} by check-in"
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff"/>',
    ]
    if series.cutoff is not None and lo < series.cutoff <= hi:
        yc = y_at(series.cutoff)
        out.append(
            f'<rect x="{_LEFT}" y="{_c(yc)}" width="{plot_w}" height="{_c(_TOP + plot_h - yc)}" '
            'fill="#fef2f2"/>'
        )
    # grid and y axis
    step = _nice_step(hi - lo)
    tick = math.ceil(lo / step) * step
    while tick <= hi + 1e-9:
        y = y_at(tick)
        out.append(
            f'<line x1="{_LEFT}" y1="{_c(y)}" x2="{_W - _RIGHT}" y2="{_c(y)}" '
            'stroke="#e5e7eb" stroke-width="1"/>'
        )
        out.append(
            f'<text x="{_LEFT - 8}" y="{_c(y + 4)}" text-anchor="end" class="tick">'
            f"{_e(_n(tick))}</text>"
        )
        tick += step
    out.append(
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + plot_h}" '
        'stroke="#374151" stroke-width="1.5"/>'
    )
    out.append(
        f'<line x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_W - _RIGHT}" y2="{_TOP + plot_h}" '
        'stroke="#374151" stroke-width="1.5"/>'
    )
    # x axis: one tick per check-in, labels thinned to fit
    every = max(1, math.ceil(n / 12))
    for i, c in enumerate(points):
        x = x_at(i)
        out.append(
            f'<line x1="{_c(x)}" y1="{_TOP + plot_h}" x2="{_c(x)}" y2="{_TOP + plot_h + 5}" '
            'stroke="#374151" stroke-width="1"/>'
        )
        if i % every == 0 or i == n - 1:
            out.append(
                f'<text x="{_c(x)}" y="{_TOP + plot_h + 20}" text-anchor="middle" '
                f'class="tick">{_e(_day(c.authored))}</text>'
            )
    out.append(
        f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_H - 8}" text-anchor="middle" '
        'class="axis">Check-in date</text>'
    )
    # cutoff
    if series.cutoff is not None and lo <= series.cutoff <= hi:
        yc = y_at(series.cutoff)
        out.append(
            f'<line x1="{_LEFT}" y1="{_c(yc)}" x2="{_W - _RIGHT}" y2="{_c(yc)}" '
            f'stroke="{_CUTOFF_COLOUR}" stroke-width="1.5" stroke-dasharray="7 5"/>'
        )
        out.append(
            f'<text x="{_W - _RIGHT - 4}" y="{_c(yc - 6)}" text-anchor="end" class="cut">'
            f"cutoff {_e(_n(series.cutoff))}</text>"
        )

    def polyline(values: list[tuple[int, float]], colour: str, width: float, extra: str) -> None:
        if len(values) >= 2:
            coords = " ".join(f"{_c(x_at(i))},{_c(y_at(v))}" for i, v in values)
            out.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                f'stroke-width="{width}" stroke-linejoin="round"{extra}/>'
            )

    # subscales, lighter and behind the total
    for k, sub_id in enumerate(series.subscale_labels):
        colour = _SUB_COLOURS[k % len(_SUB_COLOURS)]
        sub_values = [
            (i, v)
            for i, c in enumerate(points)
            if c.scorable and (v := c.subscales.get(sub_id)) is not None
        ]
        polyline(sub_values, colour, 1.75, ' stroke-opacity="0.8"')
        for i, v in sub_values:
            out.append(f'<circle cx="{_c(x_at(i))}" cy="{_c(y_at(v))}" r="2.5" fill="{colour}"/>')
    # the total
    total_values = [
        (i, v) for i, c in enumerate(points) if c.scorable and (v := c.total) is not None
    ]
    polyline(total_values, TOTAL_COLOUR, 3, "")
    for i, v in total_values:
        c = points[i]
        cx, cy = _c(x_at(i)), _c(y_at(v))
        tip = f"{_day(c.authored)}: {_n(v)}"
        fired = series.flagged.get(c.key)
        if fired:
            tip += " - " + "; ".join(fired)
            out.append(
                f'<circle cx="{cx}" cy="{cy}" r="8" fill="{FLAG_COLOUR}" stroke="#ffffff" '
                f'stroke-width="2"><title>{_e(tip)}</title></circle>'
            )
        else:
            out.append(
                f'<circle cx="{cx}" cy="{cy}" r="4.5" fill="{TOTAL_COLOUR}"><title>{_e(tip)}'
                "</title></circle>"
            )
        out.append(
            f'<text x="{cx}" y="{_c(y_at(v) - 13)}" text-anchor="middle" class="val">'
            f"{_e(_n(v))}</text>"
        )
    # unscorable check-ins: a grey cross on the axis
    for i, c in enumerate(points):
        if c.scorable:
            continue
        x, y = x_at(i), _TOP + plot_h - 10
        out.append(
            f'<path d="M{_c(x - 5)},{_c(y - 5)} L{_c(x + 5)},{_c(y + 5)} M{_c(x - 5)},'
            f'{_c(y + 5)} L{_c(x + 5)},{_c(y - 5)}" stroke="{_MUTED}" stroke-width="2">'
            f"<title>{_e(_day(c.authored))}: not scorable</title></path>"
        )
    out.append("</svg>")
    return "\n".join(out)


def _legend(series: ReportSeries) -> str:
    entries = [
        f'<span class="key"><i class="swatch" style="background:{TOTAL_COLOUR}"></i>'
        f"{_e(series.total_label)}</span>"
    ]
    for k, (_, label) in enumerate(series.subscale_labels.items()):
        colour = _SUB_COLOURS[k % len(_SUB_COLOURS)]
        entries.append(
            f'<span class="key light"><i class="swatch thin" style="background:{colour}"></i>'
            f"{_e(label)}</span>"
        )
    if series.cutoff is not None:
        meaning = f" - {series.cutoff_label}" if series.cutoff_label else ""
        entries.append(
            f'<span class="key"><i class="dash"></i>cutoff {_e(_n(series.cutoff))}'
            f"{_e(meaning)}</span>"
        )
    entries.append('<span class="key"><i class="dot"></i>check-in that raised an alert</span>')
    if any(not c.scorable for c in series.checkins):
        entries.append('<span class="key"><i class="cross">&#215;</i>not scorable</span>')
    return '<div class="legend">' + "".join(entries) + "</div>"


def _stats(series: ReportSeries) -> str:
    scored = [(c, v) for c in series.checkins if c.scorable and (v := c.total) is not None]
    parts = [f"<b>{len(series.checkins)}</b> check-ins"]
    unscorable = len(series.checkins) - len(scored)
    if unscorable:
        parts.append(f"<b>{unscorable}</b> not scorable")
    if scored:
        (_, first), (last, latest) = scored[0], scored[-1]
        change = latest - first
        sign = "+" if change > 0 else ""
        parts.append(f"latest <b>{_e(_n(latest))}</b> ({_e(_day(last.authored))})")
        parts.append(f"change since first <b>{_e(sign + _n(change))}</b>")
    flagged = [c for c in series.checkins if c.key in series.flagged]
    if flagged:
        parts.append(f'<b class="red">{len(flagged)}</b> flagged')
    return '<p class="stats">' + " &#183; ".join(parts) + "</p>"


def _flag_list(series: ReportSeries) -> str:
    rows = [
        f"<li><b>{_e(_day(c.authored))}</b> {_e(_n(c.total or 0))}: "
        f"{_e('; '.join(series.flagged[c.key]))}</li>"
        for c in series.checkins
        if c.key in series.flagged
    ]
    if not rows:
        return ""
    return '<ul class="flags">' + "".join(rows) + "</ul>"


def _series_section(series: ReportSeries) -> str:
    body = (
        _chart(series)
        if series.checkins
        else '<p class="empty">No check-ins yet for this instrument.</p>'
    )
    return (
        f'<section class="card"><h2>{_e(series.title)}</h2>{_stats(series)}'
        f'<div class="chart">{body}</div>{_legend(series)}{_flag_list(series)}</section>'
    )


# -- alerts and goals --------------------------------------------------------------------

_SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


def _alerts(
    open_alerts: Sequence[tuple[str, str, date | datetime | None]], controls: Sequence[str] = ()
) -> str:
    if not open_alerts:
        return '<section class="alerts none"><h2>Open alerts</h2><p>No open alerts.</p></section>'
    ordered = sorted(
        enumerate(open_alerts),
        key=lambda ia: (_SEVERITY_ORDER.get(ia[1][0], 3), _day(ia[1][2]), ia[1][1], ia[0]),
    )
    rows = []
    for index, (severity, message, since) in ordered:
        sev = severity if severity in _SEVERITY_ORDER else "other"
        since_text = f'<span class="since">since {_e(_day(since))}</span>' if since else ""
        control = controls[index] if index < len(controls) else ""
        rows.append(
            f'<li class="alert {sev}"><span class="sev">{_e(severity)}</span>'
            f'<span class="msg">{_e(message)}</span>{since_text}{control}</li>'
        )
    return (
        f'<section class="alerts"><h2>Open alerts ({len(ordered)})</h2>'
        f"<ul>{''.join(rows)}</ul></section>"
    )


_STANCE_TEXT = {"agree": "agrees", "disagree": "disagrees", "pending": "not yet decided"}
_DONE = {"achieved", "completed", "sustaining"}


def _badge(party: str, stance: str | None) -> str:
    if stance is None:
        return f'<span class="badge unknown">{_e(party)}: not recorded</span>'
    cls = stance if stance in _STANCE_TEXT else "unknown"
    text = _STANCE_TEXT.get(stance, stance)
    return f'<span class="badge {cls}">{_e(party)}: {_e(text)}</span>'


def _goals(goals: Sequence[ReportGoal]) -> str:
    if not goals:
        return (
            '<section class="card"><h2>Goals</h2>'
            '<p class="empty">No collaborative goals recorded.</p></section>'
        )
    cards = []
    for goal in goals:
        milestones = []
        for m in goal.milestones:
            done = m.status in _DONE
            mark = "&#10003;" if done else "&#9675;"
            due = f'<span class="due">due {_e(_day(m.due))}</span>' if m.due else ""
            milestones.append(
                f'<li class="{"done" if done else "open"}"><span class="mark">{mark}</span>'
                f'<span class="mtext">{_e(m.description)}</span>'
                f'<span class="mstatus">{_e(m.status)}</span>{due}</li>'
            )
        done_count = sum(1 for m in goal.milestones if m.status in _DONE)
        progress = (
            f'<p class="progress">{done_count} of {len(goal.milestones)} steps done</p>'
            if goal.milestones
            else ""
        )
        achievement = (
            f'<span class="pill light">{_e(goal.achievement)}</span>' if goal.achievement else ""
        )
        targets = "".join(f'<p class="target">Target: {_e(t)}</p>' for t in goal.targets)
        cards.append(
            '<div class="goal">'
            f'<p class="words">&#8220;{_e(goal.description)}&#8221;</p>'
            f'<p class="meta"><span class="pill">{_e(goal.status)}</span>{achievement}'
            f"{_badge('Client', goal.client_agreement)}"
            f"{_badge('Clinician', goal.clinician_agreement)}</p>"
            f"{targets}{progress}"
            f'<ul class="milestones">{"".join(milestones)}</ul></div>'
        )
    return f'<section class="card"><h2>Goals</h2>{"".join(cards)}</section>'


def _client_voice(
    prompts: Sequence[ConversationPrompt] | None, comments: Sequence[ClientComment] | None
) -> str:
    """What the client said: the lowest-rated items of the last check-in (conversation
    prompts) and their free-text answers; omitted when the caller passes neither."""
    if prompts is None and comments is None:
        return ""
    parts = ['<section class="card voice"><h2>What the client said</h2>']
    if prompts is not None:
        parts.append("<h3>Conversation prompts: lowest-rated in the last check-in</h3>")
        if prompts:
            when = _day(prompts[0].authored)
            rows = "".join(
                f'<li><span class="mtext">{_e(p.item)}</span>'
                f'<span class="answer">{_e(p.answer)}</span></li>'
                for p in prompts
            )
            parts.append(
                f'<p class="sub">{_e(prompts[0].instrument)}, {_e(when)}</p>'
                f'<ul class="prompts">{rows}</ul>'
            )
        else:
            parts.append('<p class="empty">No item was rated below the top of its scale.</p>')
    if comments is not None:
        parts.append("<h3>In their words</h3>")
        if comments:
            rows = "".join(
                f'<li><p class="words">&#8220;{_e(c.text)}&#8221;</p><p class="sub">'
                f"{_e(c.question)} &#183; {_e(c.instrument)}, {_e(_day(c.authored))}</p></li>"
                for c in comments
            )
            parts.append(f'<ul class="comments">{rows}</ul>')
        else:
            parts.append('<p class="empty">No written answers in recent check-ins.</p>')
    return "".join(parts) + "</section>\n"


def _not_shown(lines: Sequence[str]) -> str:
    """Records left out (responses not scored, goals or plans that could not be read): a
    clinician must know the page is not the whole record."""
    if not lines:
        return ""
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return (
        f'<section class="card notshown"><h2>Not shown ({len(lines)})</h2>'
        "<p>These records on the server could not be read and are not part of the "
        f"scores, alerts or goals above:</p><ul>{items}</ul></section>"
    )


# -- the page ----------------------------------------------------------------------------

_CSS = """
*{box-sizing:border-box}
body{margin:0;padding:24px 40px;background:#f3f4f6;color:#1f2937;
font:15px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif}
header{display:flex;justify-content:space-between;align-items:baseline;margin-bottom:16px}
h1{font-size:24px;margin:0}
h2{font-size:18px;margin:0 0 8px}
.sub{color:#6b7280}
.target{margin:2px 0;color:#374151}
.card,.alerts{background:#fff;border-radius:10px;padding:16px 20px;margin-bottom:18px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
.alerts ul{list-style:none;margin:0;padding:0}
.alert{display:flex;gap:12px;align-items:baseline;padding:8px 12px;margin:6px 0;
border-left:6px solid #9ca3af;background:#f9fafb;border-radius:4px}
.alert.high{border-color:#7f1d1d;background:#fff1f2}
.alert.medium{border-color:#c2410c;background:#fff7ed}
.alert.low{border-color:#ca8a04;background:#fefce8}
.sev{text-transform:uppercase;font-weight:bold;font-size:12px;min-width:64px}
.msg{flex:1}
.since{color:#6b7280;font-size:13px;white-space:nowrap}
.alerts.none p{color:#166534;margin:0}
.stats{margin:0 0 8px;color:#374151}
.red{color:#b91c1c}
.chart svg{display:block;max-width:100%;height:auto}
svg .tick{font-size:12px;fill:#4b5563}
svg .axis{font-size:12px;fill:#6b7280}
svg .cut{font-size:12px;fill:#4b5563}
svg .val{font-size:11px;fill:#111827;stroke:#fff;stroke-width:3px;paint-order:stroke}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:13px;margin-top:6px;color:#374151}
.key{display:inline-flex;align-items:center;gap:6px}
.key.light{color:#6b7280}
.swatch{display:inline-block;width:22px;height:4px;border-radius:2px}
.swatch.thin{height:2px}
.dash{display:inline-block;width:22px;border-top:2px dashed #4b5563}
.dot{display:inline-block;width:12px;height:12px;border-radius:50%;background:#dc2626}
.cross{font-style:normal;color:#9ca3af;font-weight:bold}
.flags{margin:8px 0 0;padding-left:20px;font-size:13px;color:#374151}
.goal{border-top:1px solid #e5e7eb;padding:10px 0}
.goal:first-of-type{border-top:none}
.words{font-size:17px;margin:0 0 6px;font-style:italic}
.meta{margin:0 0 6px;display:flex;flex-wrap:wrap;gap:8px}
.pill,.badge{font-size:12px;padding:2px 9px;border-radius:999px;background:#e0e7ff;
color:#3730a3}
.pill.light{background:#f3f4f6;color:#374151}
.badge.agree{background:#dcfce7;color:#166534}
.badge.disagree{background:#ffe4e6;color:#9f1239}
.badge.pending{background:#fef9c3;color:#854d0e}
.badge.unknown{background:#f3f4f6;color:#6b7280}
.progress{margin:0 0 4px;font-size:13px;color:#6b7280}
.milestones{list-style:none;margin:0;padding:0 0 0 6px}
.milestones li{display:flex;gap:10px;align-items:baseline;padding:2px 0}
.milestones .mark{width:16px;color:#6b7280}
.milestones .done .mark{color:#15803d;font-weight:bold}
.milestones .done .mtext{color:#6b7280}
.mtext{flex:1}
.mstatus,.due{font-size:12px;color:#6b7280}
.empty{color:#6b7280}
h3{font-size:15px;margin:10px 0 4px}
.prompts,.comments{list-style:none;margin:0;padding:0}
.prompts li{display:flex;gap:12px;align-items:baseline;padding:3px 0}
.answer{font-size:13px;padding:1px 8px;border-radius:999px;background:#ffe4e6;color:#9f1239}
.comments li{border-left:4px solid #c7d2fe;padding:2px 10px;margin:6px 0}
.comments .words{margin:0}
.comments .sub{margin:0;font-size:13px}
.act{display:inline-flex;gap:6px;margin-left:8px}
.act button{font-size:12px;padding:2px 8px}
.notice{background:#fef3c7;border-radius:8px;padding:10px 14px;margin-bottom:14px}
"""


def render_report_html(
    patient_label: str,
    series: Sequence[ReportSeries],
    goals: Sequence[ReportGoal],
    open_alerts: Sequence[tuple[str, str, date | datetime | None]],
    *,
    as_of: date | datetime | None = None,
    title: str = "Therapeutic alliance report",
    not_shown: Sequence[str] = (),
    prompts: Sequence[ConversationPrompt] | None = None,
    comments: Sequence[ClientComment] | None = None,
    alert_controls: Sequence[str] = (),
    notice: str = "",
) -> str:
    """The whole report as one HTML page (UTF-8, no scripts, no external assets).

    ``open_alerts`` are ``(severity, message, since)``; they are shown most severe first.
    ``not_shown`` lists records left out (``not scored: ...`` and unreadable goals), last.
    ``as_of`` is printed in the header when given (the output never reads the clock).
    ``prompts`` and ``comments`` make the "What the client said" section (omitted when both
    are None). The SMART view adds, as ready-made HTML it escaped itself, one control per
    alert (``alert_controls[i]`` for ``open_alerts[i]``) and a ``notice`` above the alerts.
    """
    when = f'<span class="sub">as of {_e(_day(as_of))}</span>' if as_of else ""
    sections = "".join(_series_section(s) for s in series) or (
        '<section class="card"><p class="empty">No instruments to show.</p></section>'
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}: {_e(patient_label)}</title>"
        f"<style>{_CSS}</style></head>\n<body>\n"
        f"<header><h1>{_e(title)}: {_e(patient_label)}</h1>{when}</header>\n"
        f"{notice}{_alerts(open_alerts, alert_controls)}\n"
        f"{_client_voice(prompts, comments)}{sections}\n{_goals(goals)}\n{_not_shown(not_shown)}"
        "</body></html>\n"
    )
