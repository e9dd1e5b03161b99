"""The SMART view's own small pages (errors, the standalone server choice, the patient
picker) and the controls placed beside each alert of the report. Plain HTML forms, no
scripts: every value is escaped, every form posts the session's CSRF token."""

from __future__ import annotations

import html
from collections.abc import Sequence

from alliance_fhir.api.smart import AlertControl, PatientChoice

__all__ = [
    "ACK_PATH",
    "DISCUSSED_PATH",
    "PICK_PATH",
    "VIEW_PATH",
    "alert_controls",
    "message_page",
    "notice_html",
    "picker_page",
    "server_choice_page",
]

VIEW_PATH = "/clinician"
ACK_PATH = "/clinician/acknowledge"
DISCUSSED_PATH = "/clinician/discussed"
PICK_PATH = "/clinician/patient"

_CSS = (
    "body{margin:0;padding:24px 40px;background:#f3f4f6;color:#1f2937;"
    'font:15px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif}'
    ".card{background:#fff;border-radius:10px;padding:16px 20px;max-width:720px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.12)}"
    "li{margin:6px 0}button{font-size:14px;padding:3px 10px}"
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n"
        f'<body><div class="card"><h1>{_e(title)}</h1>{body}</div></body></html>\n'
    )


def message_page(title: str, message: str) -> str:
    """An error or information page: a title and one escaped message."""
    return _page(title, f'<p class="message">{_e(message)}</p>')


def _csrf(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(csrf)}">'


def server_choice_page(servers: Sequence[str]) -> str:
    """Standalone launch with several configured servers: which one to sign in to."""
    items = "".join(
        f'<li><a href="/launch/standalone?iss={_e(s)}">{_e(s)}</a></li>' for s in servers
    )
    return _page("Choose the FHIR server", f"<ul>{items}</ul>")


def picker_page(patients: Sequence[PatientChoice], csrf: str) -> str:
    """No patient in the launch context: the clinician picks one (the id travels in the
    form body, never in a URL)."""
    if not patients:
        return message_page("Choose a patient", "Your sign-in cannot see any patient.")
    rows = []
    for p in patients:
        born = f" (born {_e(p.birth_date)})" if p.birth_date else ""
        rows.append(
            f'<li><form method="post" action="{PICK_PATH}">{_csrf(csrf)}'
            f'<input type="hidden" name="patient" value="{_e(p.patient_id)}">'
            f'<button type="submit">{_e(p.name)}</button>{born}</form></li>'
        )
    return _page("Choose a patient", f'<ul class="patients">{"".join(rows)}</ul>')


def alert_controls(control: AlertControl, csrf: str, *, can_write: bool) -> str:
    """Beside one alert: its acknowledgement state and the two actions (when the token may
    update Tasks and the alert has a Task to edit)."""
    parts = []
    if control.status == "accepted":
        parts.append('<span class="pill light">acknowledged</span>')
    if control.discussed:
        parts.append(f'<span class="pill light">discussed {_e(control.discussed)}</span>')
    if can_write and control.task_id:
        hidden = (
            f"{_csrf(csrf)}"
            f'<input type="hidden" name="task" value="{_e(control.task_id)}">'
            f'<input type="hidden" name="version" value="{_e(control.version or "")}">'
        )
        if control.status != "accepted":
            parts.append(
                f'<form method="post" action="{ACK_PATH}">{hidden}'
                '<button type="submit" name="action" value="acknowledge">Acknowledge</button>'
                "</form>"
            )
        parts.append(
            f'<form method="post" action="{DISCUSSED_PATH}">{hidden}'
            '<button type="submit" name="action" value="discussed">Discussed with client'
            "</button></form>"
        )
    return f'<span class="act">{"".join(parts)}</span>' if parts else ""


def notice_html(text: str | None) -> str:
    """A one-time message above the alerts (e.g. "changed meanwhile, reload")."""
    return f'<p class="notice" role="status">{_e(text)}</p>' if text else ""
