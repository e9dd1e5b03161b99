"""What the client said (#18): their written answers and the lowest-rated items of their
last check-in, picked from server responses and shown in the report."""

from __future__ import annotations

from datetime import date
from typing import Literal

from monitoringkit import instrument, when

from alliance_fhir.monitoring.client_voice import client_comments, conversation_prompts
from alliance_fhir.monitoring.evaluate import CheckIn
from alliance_fhir.monitoring.pull import ServerResponse, score_response
from alliance_fhir.monitoring.report import render_report_html

RATED = [i.link_id for i in instrument("trc-client").items if i.type == "choice"]


def _trc(
    qr_id: str,
    week: int,
    value: str = "5",
    *,
    said: str | None = None,
    status: Literal["completed", "entered-in-error"] = "completed",
    form: str = "trc-client",
    **overrides: str,
) -> ServerResponse:
    answers: dict[str, str | int | float] = {
        link: overrides.get(link.replace("-", "_"), value) for link in RATED
    }
    if said is not None:
        answers["do-differently" if form == "trc-client" else "notes"] = said
    return ServerResponse(
        qr_id=qr_id,
        key=f"k-{qr_id}",
        ours=True,
        instrument=instrument(form),
        patient_id="p1",
        authored=when(week),
        status=status,
        answers=answers,
    )


def _scored(*responses: ServerResponse) -> list[tuple[ServerResponse, CheckIn]]:
    return [(r, score_response(r).checkin) for r in responses]


def test_comments_are_the_clients_written_answers_newest_first() -> None:
    responses = [
        _trc("1", 0, said="Slower please"),
        _trc("2", 1, said="   "),
        _trc("3", 2, said="More homework <b>ideas</b>"),
        _trc("4", 3, said="withdrawn words", status="entered-in-error"),
    ]

    comments = client_comments(responses)

    assert [c.text for c in comments] == ["More homework <b>ideas</b>", "Slower please"]
    assert comments[0].authored == when(2).date()
    assert comments[0].question.startswith("Is there anything we could do differently")
    assert comments[0].instrument == "Therapeutic Relationship Check-in (client form)"
    assert len(client_comments([_trc(str(i), i, said=f"w{i}") for i in range(9)])) == 5


def test_a_clinicians_own_notes_are_not_what_the_client_said() -> None:
    clinician = ServerResponse(
        qr_id="c1",
        key="k-c1",
        ours=True,
        instrument=instrument("trc-clinician"),
        patient_id="p1",
        authored=when(4),
        status="completed",
        answers={"notes": "take to supervision"},
    )
    assert client_comments([clinician]) == []
    assert conversation_prompts(_scored(clinician)) == []


def test_prompts_are_the_lowest_items_of_the_last_checkin_lowest_first() -> None:
    older = _trc("1", 0, "5", pace="1", heard="1", safe="1")
    last = _trc("2", 1, "5", speak_up="2", trust="3", pace="3", overall="4", held_back="5")

    prompts = conversation_prompts(_scored(older, last))

    # held-back is reverse-scored: "completely true" that they held back is the lowest
    assert [(p.item, p.answer) for p in prompts] == [
        (instrument("trc-client").item("held-back").text, "Completely true"),
        (instrument("trc-client").item("speak-up").text, "A little true"),
        (instrument("trc-client").item("trust").text, "Partly true"),
    ]
    assert prompts[0].position == 0.0
    assert {p.authored for p in prompts} == {when(1).date()}


def test_a_last_checkin_rated_at_the_top_gives_no_prompt() -> None:
    # held-back answered "1" (not at all true) is the top of its reversed range
    top = _trc("1", 0, "5", held_back="1")
    assert conversation_prompts(_scored(top)) == []


def test_the_report_shows_what_the_client_said_escaped_and_only_when_asked() -> None:
    last = _trc("2", 1, "5", speak_up="2", said="More <script>breaks</script>")
    page = render_report_html(
        "Client p1",
        [],
        [],
        [],
        as_of=date(2024, 3, 1),
        prompts=conversation_prompts(_scored(last)),
        comments=client_comments([last]),
    )

    assert "What the client said" in page
    assert "&#8220;More &lt;script&gt;breaks&lt;/script&gt;&#8221;" in page
    assert "<script>" not in page
    assert "A little true" in page
    assert "What the client said" not in render_report_html("Client p1", [], [], [])
    empty = render_report_html("Client p1", [], [], [], prompts=[], comments=[])
    assert "No written answers in recent check-ins." in empty
    assert "No item was rated below the top of its scale." in empty
