"""Each rule kind fires exactly when a clinician would want it to, and never on bad data."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from monitoringkit import (
    default_rules,
    falling_srs,
    falling_trc,
    instrument,
    rules_for,
    rules_yaml,
    totals,
    trc,
    when,
)
from structlog.testing import capture_logs

from alliance_fhir.exceptions import ConfigError, InvalidInputError
from alliance_fhir.monitoring.evaluate import (
    CheckIn,
    Trigger,
    checkin_from_answers,
    evaluate,
    flagged_points,
)
from alliance_fhir.monitoring.rules import Rule


def run(
    rules: Sequence[Rule],
    instrument_id: str,
    series: Sequence[CheckIn],
    *,
    active: bool = True,
    weeks_after: int = 0,
) -> dict[str, Trigger]:
    last = max((c.authored for c in series), default=when(0))
    triggers = evaluate(
        rules,
        instrument(instrument_id),
        series,
        patient_key="P-1",
        care_plan_active=active,
        as_of=last + timedelta(weeks=weeks_after),
    )
    return {t.rule_id: t for t in triggers}


def one_rule(kind: str, instrument_id: str, params: str, message: str = "x") -> list[Rule]:
    return rules_yaml(
        f"""\
rules:
  - id: r
    instrument: {instrument_id}
    kind: {kind}
    severity: medium
    label: R
    message: "{message}"
    params: {params}
"""
    )


# -- a stable client raises nothing -----------------------------------------------------


def test_stable_clients_raise_no_alert() -> None:
    assert run(default_rules(), "srs", totals([37.5, 38.0, 36.8, 37.9, 38.2])) == {}
    assert run(default_rules(), "ors", totals([18.0, 21.5, 24.0, 23.1, 27.4])) == {}
    steady = [trc(f"t{i}", i, "5", pace="4") for i in range(5)]
    assert run(default_rules(), "trc-client", steady, weeks_after=3) == {}


# -- below-cutoff ------------------------------------------------------------------------


def test_below_cutoff_uses_the_instruments_cutoff_and_renders_the_numbers() -> None:
    fired = run(default_rules(), "srs", totals([38.0, 35.9]))
    trigger = fired["srs-below-cutoff"]
    assert trigger.focus_key == "a2"
    assert trigger.values["score"] == 35.9
    assert trigger.values["cutoff"] == 36
    assert trigger.message.startswith("Session rating total 35.9 on 2024-01-15 is below 36:")
    assert trigger.severity == "medium"
    assert trigger.key == "srs-below-cutoff:P-1"
    # 36 is not below 36; recovery after a low score clears it
    assert "srs-below-cutoff" not in run(default_rules(), "srs", totals([38.0, 36.0]))
    assert "srs-below-cutoff" not in run(default_rules(), "srs", totals([30.0, 37.0]))


def test_below_cutoff_at_or_below_and_override() -> None:
    rules = one_rule("below-cutoff", "ors", "{}")  # ors: at-or-below 25
    assert "r" in run(rules, "ors", totals([25.0]))
    assert "r" not in run(rules, "ors", totals([25.1]))
    override = one_rule("below-cutoff", "ors", "{cutoff: 20, rule: below}")
    assert "r" not in run(override, "ors", totals([20.0]))
    assert "r" in run(override, "ors", totals([19.9]))


# -- drop --------------------------------------------------------------------------------


def test_drop_from_previous_at_least_the_amount() -> None:
    fired = run(default_rules(), "srs", totals([38.0, 33.9]))["srs-drop"]
    assert fired.values["drop"] == 4.1
    assert fired.values["reference"] == 38
    assert "fell by 4.1 (from 38 to 33.9)" in fired.message
    assert "srs-drop" not in run(default_rules(), "srs", totals([38.0, 34.1]))
    # exactly the amount counts, whatever binary floats would say
    assert "srs-drop" in run(default_rules(), "srs", totals([37.3, 33.3]))
    # compared with the previous score, not an older one
    assert "srs-drop" not in run(default_rules(), "srs", totals([39.0, 36.0, 34.5]))


def test_drop_from_baseline_uses_reliable_change() -> None:
    rule = "ors-deterioration"
    fired = run(default_rules(), "ors", totals([20.0, 22.0, 14.9]))[rule]
    assert fired.values["amount"] == 5
    assert fired.values["compared_with"] == "the first check-in"
    assert "14.9 on 2024-01-22 is 5.1 below the first check-in (20)" in fired.message
    assert rule not in run(default_rules(), "ors", totals([20.0, 22.0, 15.1]))
    assert rule not in run(default_rules(), "ors", totals([20.0]))


def test_drop_from_mean_of_first_sessions() -> None:
    rules = one_rule("drop", "ors", "{reference: baseline, baseline_sessions: 2}")
    # baseline (20 + 24) / 2 = 22; 17 is 5 below it
    assert run(rules, "ors", totals([20.0, 24.0, 17.0]))["r"].values["reference"] == 22
    assert "r" not in run(rules, "ors", totals([20.0, 24.0, 17.5]))
    assert "r" not in run(rules, "ors", totals([20.0, 14.0]))  # no score after the baseline


# -- declining trend ---------------------------------------------------------------------


def test_declining_trend_needs_every_step_down_and_enough_decline() -> None:
    rules = rules_for("ors")
    # falling at every step, but only 3.1 over the last 3 check-ins
    assert "ors-declining" not in run(rules, "ors", totals([30.0, 28.0, 26.5, 24.9]))
    # 3 sessions, decline >= 5 (reliable change)
    fired = run(rules, "ors", totals([30.0, 33.0, 30.0, 27.9]))
    assert fired["ors-declining"].values == {
        "instrument": "ors",
        "score_name": "Outcome rating total (0-40)",
        "score": 27.9,
        "date": "2024-01-29",
        "first": 33,
        "decline": 5.1,
        "min_decline": 5,
        "sessions": 3,
    }
    assert "ors-declining" not in run(rules, "ors", totals([33.0, 30.0, 28.1]))  # only 4.9
    assert "ors-declining" not in run(rules, "ors", totals([33.0, 26.0, 27.0]))  # rose
    assert "ors-declining" not in run(rules, "ors", totals([33.0, 27.0]))  # too few


def test_declining_trend_non_strict_allows_flat_steps() -> None:
    strict = one_rule("declining-trend", "ors", "{sessions: 4, min_decline: 3}")
    loose = one_rule("declining-trend", "ors", "{sessions: 4, min_decline: 3, strict: false}")
    flat = totals([30.0, 30.0, 28.0, 26.0])
    assert "r" not in run(strict, "ors", flat)
    assert "r" in run(loose, "ors", flat)
    assert "r" not in run(loose, "ors", totals([30.0, 30.0, 30.0, 30.0]))


# -- item floor --------------------------------------------------------------------------


def test_heard_at_its_lowest_fires_and_names_the_item() -> None:
    fired = run(default_rules(), "trc-client", [trc("t1", 0), trc("t2", 1, heard="1")])
    trigger = fired["trc-client-heard-floor"]
    assert trigger.severity == "high"
    assert trigger.focus_key == "t2"
    assert '"Feeling heard" at the lowest point of the scale (1)' in trigger.message
    nearly = run(default_rules(), "trc-client", [trc("t1", 0), trc("t2", 1, heard="2")])
    assert "trc-client-heard-floor" not in nearly
    # an earlier floor answer followed by a better one does not fire
    later = run(default_rules(), "trc-client", [trc("t1", 0, heard="1"), trc("t2", 1)])
    assert "trc-client-heard-floor" not in later


def test_item_floor_uses_keyed_values_for_reverse_items() -> None:
    rules = one_rule("item-floor", "trc-client", "{link_id: held-back}", "{item} {value}")
    # "held back completely true" (5) is the worst answer: keyed 1
    assert run(rules, "trc-client", [trc("t1", 0, held_back="5")])["r"].values["value"] == 1
    assert "r" not in run(rules, "trc-client", [trc("t1", 0, held_back="1")])


def test_item_floor_on_an_unanswered_item_does_not_fire() -> None:
    rules = one_rule("item-floor", "trc-client", "{link_id: heard}")
    assert "r" not in run(rules, "trc-client", [trc("t1", 0, heard=None)])


# -- missed check-in ---------------------------------------------------------------------


def test_missed_checkin_while_the_care_plan_is_active() -> None:
    series = [trc("t1", 0)]
    fired = run(default_rules(), "trc-client", series, weeks_after=4)  # 28 days
    trigger = fired["trc-client-missed-checkin"]
    assert trigger.focus_key is None
    assert trigger.values == {
        "instrument": "trc-client",
        "days_since": 28,
        "days": 28,
        "last_checkin": "2024-01-08",
    }
    assert "trc-client-missed-checkin" not in run(
        default_rules(), "trc-client", series, weeks_after=3
    )
    inactive = run(default_rules(), "trc-client", series, weeks_after=8, active=False)
    assert "trc-client-missed-checkin" not in inactive


def test_missed_checkin_with_no_checkin_counts_from_the_care_plan_start() -> None:
    rules = rules_for("trc-client")
    common = {"patient_key": "P-1", "care_plan_active": True, "as_of": when(5)}
    assert evaluate(rules, instrument("trc-client"), [], **common) == []
    (trigger,) = evaluate(rules, instrument("trc-client"), [], care_plan_start=when(0), **common)
    assert trigger.rule_id == "trc-client-missed-checkin"
    assert trigger.values["last_checkin"] == "none yet"


def test_an_unscorable_checkin_still_counts_as_contact() -> None:
    series = [trc("t1", 0), CheckIn("t2", when(3), None, scorable=False, reason="too few")]
    fired = run(default_rules(), "trc-client", series, weeks_after=1)
    assert "trc-client-missed-checkin" not in fired


# -- unscorable check-ins ----------------------------------------------------------------


def test_unscorable_checkins_never_trigger_and_are_logged_without_phi() -> None:
    # every item but 3 unanswered: heard=1 is there, but the check-in cannot be scored
    bad = trc("t2", 1, None, heard="1", safe="1", overall="1")
    assert not bad.scorable
    assert bad.reason is not None
    with capture_logs() as logs:
        fired = run(default_rules(), "trc-client", [trc("t1", 0), bad])
    assert fired == {}
    (entry,) = [e for e in logs if e["event"] == "monitoring.checkin_skipped"]
    assert entry["assessment"] == "t2"
    assert entry["instrument"] == "trc-client"
    assert "P-1" not in str(entry)


def test_score_rules_look_past_unscorable_checkins() -> None:
    # the drop is measured between the scorable neighbours
    fired = run(default_rules(), "srs", totals([38.0, None, 33.5]))
    assert fired["srs-drop"].values["reference"] == 38
    # a low score followed by an unscorable one stays the current state
    fired = run(default_rules(), "srs", totals([38.0, 30.0, None]))
    assert fired["srs-below-cutoff"].focus_key == "a2"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 40).map(lambda v: round(v, 1)), st.booleans()),
        min_size=1,
        max_size=9,
    )
)
def test_property_unscorable_checkins_change_nothing(data: list[tuple[float, bool]]) -> None:
    """Inserting unscorable check-ins between the scored ones never changes a score rule's
    verdict, and an unscorable check-in is never the focus of an alert."""
    rules = [r for r in rules_for("srs") if r.kind != "missed-checkin"]
    clean = totals([v for v, _ in data])
    noisy: list[CheckIn] = []
    for i, (c, (_, insert)) in enumerate(zip(clean, data, strict=True)):
        noisy.append(CheckIn(c.key, when(2 * i), c.total))
        if insert:
            noisy.append(CheckIn(f"u{i}", when(2 * i + 1), None, scorable=False, reason="x"))
    plain = [CheckIn(c.key, when(2 * i), c.total) for i, c in enumerate(clean)]
    with_noise = run(rules, "srs", noisy)
    assert {k: (t.focus_key, t.message) for k, t in with_noise.items()} == {
        k: (t.focus_key, t.message) for k, t in run(rules, "srs", plain).items()
    }
    assert all(not (t.focus_key or "").startswith("u") for t in with_noise.values())


# -- determinism and guard rails ---------------------------------------------------------


def test_evaluation_is_deterministic_whatever_the_input_order() -> None:
    series = falling_trc()
    shuffled = list(series)
    random.Random(7).shuffle(shuffled)
    rules = list(default_rules())
    common = {"patient_key": "P", "care_plan_active": True, "as_of": when(6)}
    first = evaluate(rules, instrument("trc-client"), series, **common)
    again = evaluate(list(reversed(rules)), instrument("trc-client"), shuffled, **common)
    assert first == again
    assert [t.rule_id for t in first] == sorted(t.rule_id for t in first)
    assert {t.rule_id for t in first} == {
        "trc-client-below-cutoff",
        "trc-client-declining",
        "trc-client-heard-floor",
    }


def test_rules_for_other_instruments_are_ignored_and_misfits_refused() -> None:
    assert run(rules_for("ors"), "srs", totals([10.0])) == {}
    misfit = rules_yaml(
        """\
rules:
  - {id: d, instrument: srs, kind: drop, severity: low, label: D, message: x}
""",
        check=False,
    )
    with pytest.raises(ConfigError, match=r"give params\.amount"):
        run(misfit, "srs", totals([10.0]))


def test_naive_times_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="needs a timezone"):
        CheckIn("k", when(0).replace(tzinfo=None), 30.0)


def test_checkin_from_invalid_answers_is_unscorable() -> None:
    c = checkin_from_answers(instrument("srs"), "k", when(0), {"q1": 11.0, "q2": 5.0})
    assert not c.scorable
    assert c.reason is not None
    assert "q1" in c.reason


def test_flagged_points_mark_each_checkin_that_fired_at_its_time() -> None:
    flagged = flagged_points(default_rules(), instrument("srs"), falling_srs())
    assert flagged == {"srs6": ("srs-below-cutoff",), "srs7": ("srs-below-cutoff",)}
