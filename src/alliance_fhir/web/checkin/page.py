"""The check-in page's HTML: the form page and the page a refused link gets.

Plain strings with every value escaped; the Questionnaire travels as a JSON data block
(``<script type="application/json">``, which no browser runs), so the Content-Security-Policy
can refuse every inline script.
"""

from __future__ import annotations

import html
import json

from starlette.responses import HTMLResponse

from alliance_fhir.api.checkin import CheckinForm

__all__ = ["form_page", "refusal_page"]

_ASSETS = "/assets/checkin"

_HEAD = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>{title}</title>
{links}
</head>
"""


_WHO_SEES = {
    False: "Your answers go to your clinician only.",
    True: "Your answers are saved to this client's record.",
}


def _json_block(value: object) -> str:
    """JSON safe inside a ``<script>`` element: no ``</script>``, no HTML comment."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def form_page(form: CheckinForm) -> HTMLResponse:
    title = html.escape(form.title or "Check-in")
    links = (
        f'<link rel="stylesheet" href="{_ASSETS}/lforms/styles.css">\n'
        f'<link rel="stylesheet" href="{_ASSETS}/checkin.css">'
    )
    body = f"""<body>
<main>
<h1>{title}</h1>
<p class="intro">Please answer every question, then press <strong>Submit</strong>.
{_WHO_SEES[form.by_clinician]}</p>
<div id="form" class="form" aria-busy="true"></div>
<p id="message" class="message" role="alert" aria-live="assertive"></p>
<button id="submit" class="submit" type="button" disabled>Submit</button>
</main>
<script type="application/json" id="questionnaire">{_json_block(form.questionnaire)}</script>
<script src="{_ASSETS}/lforms/zone.min.js"></script>
<script src="{_ASSETS}/lforms/lhc-forms.js"></script>
<script src="{_ASSETS}/lforms/lformsFHIR.min.js"></script>
<script src="{_ASSETS}/checkin.js"></script>
</body>
</html>
"""
    return HTMLResponse(_HEAD.format(title=title, links=links) + body)


def refusal_page(status: int, message: str) -> HTMLResponse:
    """A page that says, in one sentence, why this link cannot be used."""
    links = f'<link rel="stylesheet" href="{_ASSETS}/checkin.css">'
    body = f"""<body>
<main class="refused">
<h1>Check-in</h1>
<p id="message" class="message shown">{html.escape(message)}</p>
</main>
</body>
</html>
"""
    return HTMLResponse(_HEAD.format(title="Check-in", links=links) + body, status_code=status)
