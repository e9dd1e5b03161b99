"""What the client said, for the clinician: pure selection, no I/O.

Asking the client how the relationship feels is only worth it if someone reads the answer.
Two things are picked from the client's check-ins (instruments whose respondent is the
client) for the report and the SMART clinician view:

* **comments**: their free-text answers (unscored ``text`` items such as "what could we do
  differently"), newest first;
* **conversation prompts**: the lowest-rated items of their most recent scorable check-in,
  lowest first, so the clinician can open the next session with "you rated ... lower: tell
  me more".

Both are patient data: they are shown on the page and never logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from alliance_fhir.instruments.schema import Instrument, Item
from alliance_fhir.monitoring.evaluate import CheckIn
from alliance_fhir.monitoring.pull import ServerResponse

__all__ = ["ClientComment", "ConversationPrompt", "client_comments", "conversation_prompts"]


@dataclass(frozen=True)
class ClientComment:
    """One free-text answer: when, to which instrument and question, in the client's words."""

    authored: date
    instrument: str
    question: str
    text: str


@dataclass(frozen=True)
class ConversationPrompt:
    """One low-rated item of the last check-in: the statement, the answer the client chose,
    and where on the item's range it lies (0 lowest, 1 highest, reverse-scoring applied)."""

    authored: date
    instrument: str
    item: str
    answer: str
    position: float


def _by_client(resp: ServerResponse) -> bool:
    return not resp.withdrawn and resp.instrument.respondent == "client"


def _question(item: Item) -> str:
    """The item's own wording; a licensed item (no wording shipped) by its neutral label."""
    return item.text or item.label


def client_comments(responses: Iterable[ServerResponse], *, limit: int = 5) -> list[ClientComment]:
    """The client's free-text answers of their ``limit`` most recent comments, newest first."""
    out: list[ClientComment] = []
    for resp in sorted(
        filter(_by_client, responses), key=lambda r: (r.authored, r.key), reverse=True
    ):
        for item in resp.instrument.items:
            text = resp.answers.get(item.link_id)
            if item.type != "text" or not isinstance(text, str) or not text.strip():
                continue
            out.append(
                ClientComment(
                    resp.authored.date(), resp.instrument.title, _question(item), text.strip()
                )
            )
    return out[:limit]


def _answer_text(instrument: Instrument, item: Item, raw: object) -> str:
    if item.scale:
        for point in instrument.scale(item.scale).points:
            if point.code == str(raw):
                return point.label
    return str(raw)


def conversation_prompts(
    scored: Sequence[tuple[ServerResponse, CheckIn]], *, limit: int = 3
) -> list[ConversationPrompt]:
    """The ``limit`` lowest-rated items of the client's most recent scorable check-in.

    Items rated at the top of their range are not prompts (nothing to ask about); ties keep
    the instrument's item order. Empty when the client has no scorable check-in.
    """
    candidates = [(r, c) for r, c in scored if c.scorable and _by_client(r)]
    if not candidates:
        return []
    resp, checkin = max(candidates, key=lambda pair: (pair[0].authored, pair[0].key))
    instrument = resp.instrument
    ranked: list[tuple[float, int, ConversationPrompt]] = []
    for order, item in enumerate(instrument.items):
        keyed = checkin.keyed_items.get(item.link_id)
        if keyed is None or not item.scored:
            continue
        lo, hi = instrument.item_range(item)
        position = (keyed - lo) / (hi - lo) if hi > lo else 1.0
        if position >= 1.0:
            continue
        prompt = ConversationPrompt(
            authored=resp.authored.date(),
            instrument=instrument.title,
            item=_question(item),
            answer=_answer_text(instrument, item, resp.answers.get(item.link_id)),
            position=round(position, 3),
        )
        ranked.append((position, order, prompt))
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return [prompt for _, _, prompt in ranked[:limit]]
