"""Scoring of the bundled instruments against totals worked out by hand (in the comments)."""

from __future__ import annotations

import pytest

from alliance_fhir.exceptions import InvalidInputError, ScoringError
from alliance_fhir.instruments.library import load_library
from alliance_fhir.instruments.schema import Instrument
from alliance_fhir.instruments.scoring import (
    AnswerValue,
    item_value,
    keyed_value,
    round_half_up,
    score,
)

LIBRARY = load_library()


def inst(instrument_id: str) -> Instrument:
    return LIBRARY.get(instrument_id)


# -- trc-client --------------------------------------------------------------------------

TRC_CLIENT: dict[str, AnswerValue] = {
    # bond 4+4+5+3 = 16 -> 4.00
    "heard": "4",
    "understood": "4",
    "validated": "5",
    "trust": "3",
    # goals 3+3+4+4 = 14 -> 3.50
    "goals-agreed": "3",
    "goals-own": "3",
    "progress-agreed": "4",
    "small-steps": "4",
    # tasks 5+4+4+3 = 16 -> 4.00
    "approach": "5",
    "involved": "4",
    "pace": "4",
    "speak-up": "3",
    # safety 4+5+2+(6-4=2) = 13 -> 3.25
    "safe": "4",
    "respected": "5",
    "confidentiality": "2",
    "held-back": "4",
    "overall": "3",
    "do-differently": "Could we start on time more often?",
}


def test_trc_client_golden() -> None:
    s = score(inst("trc-client"), TRC_CLIENT)
    # total = (16 + 14 + 16 + 13 + 3) / 17 = 62 / 17 = 3.6470... -> 3.65
    assert s.total.value == 3.65
    assert (s.total.answered, s.total.expected, s.total.prorated) == (17, 17, False)
    assert s.total.reason is None
    assert [(v.id, v.value) for v in s.subscales] == [
        ("bond", 4.0),
        ("goals", 3.5),
        ("tasks", 4.0),
        ("safety", 3.25),
    ]
    assert s.band is not None
    assert s.band.code == "mixed"
    assert s.below_cutoff is True  # 3.65 < 4


def test_trc_client_all_top_marks_with_reverse_item() -> None:
    answers: dict[str, AnswerValue] = {k: "5" for k in TRC_CLIENT if k != "do-differently"}
    answers["held-back"] = "1"  # "not at all true" is the best answer to a reverse item
    s = score(inst("trc-client"), answers)
    assert s.total.value == 5.0
    assert all(v.value == 5.0 for v in s.subscales)
    assert s.band is not None
    assert s.band.code == "strong"
    assert s.below_cutoff is False


def test_trc_client_proration_success() -> None:
    answers = dict(TRC_CLIENT)
    del answers["heard"], answers["pace"]  # both were 4
    s = score(inst("trc-client"), answers)
    # 15 of 17 answered (>= ceil(0.8 * 17) = 14): mean of answered = (62 - 8) / 15 = 3.60
    assert s.total.value == 3.6
    assert s.total.prorated is True
    assert (s.total.answered, s.total.expected) == (15, 17)
    assert s.total.reason is not None
    assert "heard" in s.total.reason
    assert "pace" in s.total.reason
    # bond: 4 + 5 + 3 = 12 over 3 answered (>= ceil(0.75 * 4) = 3) -> 4.00
    assert s.subscale("bond").value == 4.0
    assert s.subscale("bond").prorated is True
    # tasks: 5 + 4 + 3 = 12 / 3 -> 4.00
    assert s.subscale("tasks").value == 4.0
    assert s.subscale("goals").prorated is False


def test_trc_client_proration_failure_names_missing_items() -> None:
    answers = dict(TRC_CLIENT)
    for link_id in ("heard", "understood", "goals-own", "pace"):
        del answers[link_id]
    s = score(inst("trc-client"), answers)
    # 13 answered < 14 needed
    assert s.total.value is None
    assert s.total.prorated is False
    assert s.total.reason is not None
    assert "4 of 17 items unanswered" in s.total.reason
    assert "heard, understood, goals-own, pace" in s.total.reason
    assert "at least 14" in s.total.reason
    # bond lost 2 of 4 -> None; goals and tasks lost 1 -> prorated
    assert s.subscale("bond").value is None
    assert s.subscale("goals").value == pytest.approx(11 / 3, abs=0.005)
    assert s.subscale("goals").value == 3.67  # (3 + 4 + 4) / 3 = 3.666... -> 3.67
    assert s.band is None
    assert s.below_cutoff is None


def test_rounding_is_half_up_not_bankers() -> None:
    # 16 of 17 items answered, keyed values summing to 50: 50 / 16 = 3.125 exactly.
    # Half-up gives 3.13; banker's rounding (Python's round) would give 3.12.
    answers: dict[str, AnswerValue] = {k: "3" for k in TRC_CLIENT if k != "do-differently"}
    del answers["overall"]
    answers["heard"] = "4"
    answers["trust"] = "4"
    answers["held-back"] = "3"  # reversed 3 is still 3
    s = score(inst("trc-client"), answers)
    assert s.total.value == 3.13
    assert round(3.125, 2) == 3.12  # what we must not do


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [(2.5, 0, 3.0), (3.5, 0, 4.0), (-2.5, 0, -3.0), (0.125, 2, 0.13), (2.675, 2, 2.68)],
)
def test_round_half_up(value: float, decimals: int, expected: float) -> None:
    assert round_half_up(value, decimals) == expected


# -- trc-clinician -----------------------------------------------------------------------

TRC_CLINICIAN: dict[str, AnswerValue] = {
    # bond 4 + 4 + 5 + (6 - 2 = 4) = 17 -> 4.25
    "attuned": "4",
    "client-trust": "4",
    "regard": "5",
    "unspoken-strain": "2",
    # goals 3 + 4 + 3 = 10 -> 3.33
    "goals-agreed": "3",
    "goals-clients-own": "4",
    "steps-realistic": "3",
    # tasks 4 + 4 + 2 = 10 -> 3.33
    "tasks-agreed": "4",
    "client-involved": "4",
    "adapted": "2",
    "overall": "3",
    # reflection 5 + 4 + 5 = 14 -> 4.67 (not in the total)
    "own-reactions": "5",
    "reactions-contained": "4",
    "boundaries": "5",
    "supervision": "yes",
    "notes": "bring to Thursday supervision",
}


def test_trc_clinician_golden() -> None:
    s = score(inst("trc-clinician"), TRC_CLINICIAN)
    # total = (17 + 10 + 10 + 3) / 11 = 40 / 11 = 3.6363... -> 3.64
    assert s.total.value == 3.64
    assert s.total.expected == 11
    assert [(v.id, v.value) for v in s.subscales] == [
        ("bond", 4.25),
        ("goals", 3.33),
        ("tasks", 3.33),
        ("reflection", 4.67),
    ]
    assert s.below_cutoff is False  # 3.64 is not below 3.5
    assert s.band is None  # no bands defined


def test_trc_clinician_reflection_and_supervision_do_not_move_the_total() -> None:
    answers = dict(TRC_CLINICIAN)
    answers.update({"own-reactions": "1", "boundaries": "1", "supervision": "no"})
    del answers["reactions-contained"]
    s = score(inst("trc-clinician"), answers)
    assert s.total.value == 3.64
    assert s.subscale("reflection").value is None  # not prorated
    assert "reactions-contained" in (s.subscale("reflection").reason or "")


def test_unscored_choice_answer_is_still_checked() -> None:
    with pytest.raises(InvalidInputError, match="supervision"):
        score(inst("trc-clinician"), {**TRC_CLINICIAN, "supervision": "always"})


# -- wai-sr ------------------------------------------------------------------------------

WAI_MARKS = [4, 5, 3, 2, 4, 3, 5, 2, 4, 3, 1, 5]  # q1 .. q12
WAI = {f"q{n}": str(v) for n, v in enumerate(WAI_MARKS, 1)}


def test_wai_sr_golden() -> None:
    s = score(inst("wai-sr"), WAI)
    # task q1,q2,q10,q12 = 4+5+3+5 = 17; bond q3,q5,q7,q9 = 3+4+5+4 = 16;
    # goal q4,q6,q8,q11 = 2+3+2+1 = 8; total = 41
    assert s.total.value == 41.0
    assert [(v.id, v.value) for v in s.subscales] == [
        ("task", 17.0),
        ("bond", 16.0),
        ("goal", 8.0),
    ]
    assert s.band is None
    assert s.below_cutoff is None  # no cutoff for the WAI-SR


def test_wai_sr_one_missing_is_prorated() -> None:
    answers = {k: v for k, v in WAI.items() if k != "q11"}
    s = score(inst("wai-sr"), answers)
    # goal: (2+3+2) / 3 * 4 = 28/3 = 9.33 -> 9; total: 40 / 11 * 12 = 43.63 -> 44
    assert s.subscale("goal").value == 9.0
    assert s.subscale("goal").prorated is True
    assert s.total.value == 44.0
    assert s.total.prorated is True


def test_wai_sr_two_missing_fails_total() -> None:
    answers = {k: v for k, v in WAI.items() if k not in ("q11", "q1")}
    s = score(inst("wai-sr"), answers)
    assert s.total.value is None
    assert "at least 11" in (s.total.reason or "")
    # task: (5+3+5) / 3 * 4 = 52/3 = 17.33 -> 17
    assert s.subscale("task").value == 17.0
    answers.pop("q4")  # a second goal item
    assert score(inst("wai-sr"), answers).subscale("goal").value is None


# -- srs and ors -------------------------------------------------------------------------


def test_srs_golden_below_cutoff() -> None:
    s = score(inst("srs"), {"q1": 9.1, "q2": 8.7, "q3": 9.0, "q4": 8.6})
    # 9.1 + 8.7 + 9.0 + 8.6 = 35.4 exactly (naive float addition is not exact)
    assert s.total.value == 35.4
    assert s.below_cutoff is True
    assert s.band is not None
    assert s.band.code == "concern"


def test_srs_at_cutoff_is_not_below() -> None:
    s = score(inst("srs"), {"q1": 9.5, "q2": 9, "q3": 8.7, "q4": 8.8})
    assert s.total.value == 36.0  # 9.5 + 9 + 8.7 + 8.8
    assert s.below_cutoff is False
    assert s.band is not None
    assert s.band.code == "adequate"


def test_srs_needs_all_four() -> None:
    s = score(inst("srs"), {"q1": 9.1, "q2": 8.7, "q4": 8.6})
    assert s.total.value is None
    assert s.total.reason == "1 of 4 items unanswered (q3); this score is not prorated"
    assert s.below_cutoff is None


def test_ors_at_or_below_cutoff() -> None:
    at = score(inst("ors"), {"q1": 6.2, "q2": 5.8, "q3": 7.0, "q4": 6})
    assert at.total.value == 25.0  # 6.2 + 5.8 + 7.0 + 6
    assert at.below_cutoff is True
    assert at.band is not None
    assert at.band.code == "clinical"
    above = score(inst("ors"), {"q1": 6.3, "q2": 5.8, "q3": 7.0, "q4": 6})
    assert above.total.value == 25.1
    assert above.below_cutoff is False
    assert above.band is not None
    assert above.band.code == "non-clinical"


def test_ors_decimal_sum_is_exact() -> None:
    s = score(inst("ors"), {"q1": 0.1, "q2": 0.2, "q3": 0, "q4": 0})
    assert 0.1 + 0.2 != 0.3
    assert s.total.value == 0.3


# -- item values and refusals ------------------------------------------------------------


def test_item_and_keyed_value_of_reverse_item() -> None:
    i = inst("trc-client")
    item = i.item("held-back")
    assert item_value(i, item, "4") == 4.0
    assert keyed_value(i, item, "4") == 2.0  # 1 + 5 - 4
    plain = i.item("trust")
    assert keyed_value(i, plain, "4") == 4.0


def test_text_item_has_no_value() -> None:
    i = inst("trc-client")
    with pytest.raises(ScoringError):
        item_value(i, i.item("do-differently"), "anything")


@pytest.mark.parametrize(
    ("link_id", "answer", "reason"),
    [
        ("q1", 10.1, "outside 0-10"),
        ("q1", -0.1, "outside 0-10"),
        ("q1", 9.55, "more than 1 decimal"),
        ("q1", "9.5", "expected a number"),
        ("q1", True, "boolean"),
        ("q1", float("nan"), "finite"),
    ],
)
def test_srs_refuses_bad_marks(link_id: str, answer: AnswerValue, reason: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        score(inst("srs"), {link_id: answer})
    (problem,) = info.value.problems
    assert problem.field == link_id
    assert reason in problem.reason


def test_off_scale_code_and_unknown_link_id_refused_together() -> None:
    with pytest.raises(InvalidInputError) as info:
        score(inst("wai-sr"), {**WAI, "q3": "6", "q13": "1", "q5": 3})
    fields = {p.field: p.reason for p in info.value.problems}
    assert fields.keys() == {"q3", "q5", "q13"}
    assert "'6' is not a code of scale point5" in fields["q3"]
    assert "no item has this linkId" in fields["q13"]
    assert "a string" in fields["q5"]


def test_reasons_never_echo_free_text() -> None:
    secret = "I am frightened of my partner"
    with pytest.raises(InvalidInputError) as info:
        score(inst("trc-client"), {"do-differently": 5, "not-an-item": secret})
    assert secret not in str(info.value)
    assert {p.field for p in info.value.problems} == {"do-differently", "not-an-item"}


def test_none_answer_counts_as_unanswered() -> None:
    answers: dict[str, AnswerValue | None] = {"q1": 9.1, "q2": 8.7, "q3": None, "q4": 8.6}
    s = score(inst("srs"), answers)  # type: ignore[arg-type]  # tolerated at runtime
    assert s.total.value is None
    assert s.total.answered == 3


def test_no_answers_at_all() -> None:
    s = score(inst("wai-sr"), {})
    assert s.total.value is None
    assert (s.total.reason or "").startswith("no items answered")


def test_scores_are_deterministic_values() -> None:
    first = score(inst("wai-sr"), WAI)
    assert first == score(inst("wai-sr"), dict(reversed(WAI.items())))
    assert isinstance(first.total.value, float)
