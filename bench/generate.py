"""A synthetic clinic for the benchmarks: clients x sessions of alliance check-ins.

Every session a client fills in the relationship check-in (``trc-client``, 17 scored 1-5
items plus an optional comment) and the Session Rating Scale (``srs``, four 0-10 lines), so
one session is two assessments. Each client also has one collaborative goal plan (two goals,
one broken into a milestone, GAS ratings, a CarePlan).

Answers are plausible rather than uniform noise: each client has an alliance level that
grows over the sessions, with the odd rupture session where it drops; item answers scatter
around it; the reverse-keyed ``held-back`` item moves the other way; the SRS lines follow the
same level on their 0-10 scale.

Written in the formats the normal importers read (docs/assessments.md, docs/goals.md):

* ``assessments/trc-client/client-NNNNNN.yaml`` - record files, one per client, ``defaults``
  holding the patient and clinician;
* ``assessments/srs/srs-NNNN.csv`` - the shipped CSV column map, 250 clients per file;
* ``goals/plans-NNNN.yaml`` - ``plans:`` files, 100 plans per file;
* ``people.json`` - a transaction Bundle of Patients and Practitioners to seed a test server;
* ``manifest.json`` - the counts.

``changed`` alters one answer of every ``round(1/changed)``-th assessment (same keys), for
the "1% changed" re-sync. Output is deterministic for a given size, seed and ``changed``.

    python -m bench.generate --size 1000 --out .bench/clinic-1k
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

MRN_SYSTEM = "http://example-clinic.org/mrn"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
SESSIONS = 10
CLIENTS_PER_CLINICIAN = 20
CLIENTS_PER_CSV = 250
PLANS_PER_FILE = 100
OFFSET = timezone(timedelta(hours=-5))

TRC_ITEMS = (
    "heard",
    "understood",
    "validated",
    "trust",
    "goals-agreed",
    "goals-own",
    "progress-agreed",
    "small-steps",
    "approach",
    "involved",
    "pace",
    "speak-up",
    "safe",
    "respected",
    "confidentiality",
    "held-back",
    "overall",
)
COMMENTS = (
    "Could we leave more time at the end to plan the week?",
    "I would like to talk more about work, less about the past.",
    "Slower please when we do the breathing exercise.",
    "Maybe a shorter homework sheet.",
    "It helped that you explained why we do the exposure steps.",
)
FAMILY = ("Moreau", "Nakamura", "Oyelaran", "Petrov", "Quispe", "Rahman", "Silva", "Tanaka")
GIVEN = ("Alex", "Bea", "Chidi", "Dana", "Emil", "Farah", "Goran", "Hana", "Ines", "Jonas")
GOALS = (
    ("Sleep through most nights without checking my phone.", "Sleep hygiene routine."),
    ("Go back to the Thursday choir rehearsals.", "Behavioural activation: valued activity."),
    ("Say no to extra shifts when I am exhausted.", "Assertiveness and boundary setting."),
    ("Ride the train to the city centre on my own.", "Graded exposure for avoidance."),
    ("Eat lunch away from my desk three days a week.", "Self-care scheduling."),
    ("Phone a friend when the evenings feel long.", "Reduce isolation; social contact."),
)


@dataclass(frozen=True)
class Manifest:
    size: int
    clients: int
    sessions: int
    practitioners: int
    assessments: int
    plans: int
    changed: float
    seed: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def npi(n: int) -> str:
    """A valid-looking NPI (Luhn check digit over the 80840 prefix, as the NPI rule says)."""
    base = f"{100000000 + n * 7919 % 900000000:09d}"
    digits = [int(d) for d in "80840" + base]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return base + str((10 - total % 10) % 10)


def mrn(client: int) -> str:
    return f"MRN-B{client:06d}"


def clients_for(size: int, sessions: int) -> int:
    return max(1, math.ceil(size / (2 * sessions)))


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


class _Client:
    """One client's trajectory: an alliance level per session (1..5), ruptures included."""

    def __init__(self, rng: random.Random, sessions: int) -> None:
        start = rng.gauss(3.4, 0.5)
        growth = rng.uniform(0.02, 0.12)
        self.levels: list[float] = []
        for s in range(sessions):
            level = start + growth * s + rng.gauss(0, 0.15)
            if s > 1 and rng.random() < 0.06:  # a rupture session
                level -= rng.uniform(0.8, 1.6)
            self.levels.append(_clamp(level, 1.2, 4.95))


def _trc_answers(rng: random.Random, level: float) -> dict[str, str]:
    answers: dict[str, str] = {}
    for item in TRC_ITEMS:
        value = round(_clamp(level + rng.gauss(0, 0.55), 1, 5))
        if item == "held-back":  # reverse-keyed: holding back is high when alliance is low
            value = 6 - value
        answers[item] = str(value)
    if rng.random() < 0.1:
        answers["do-differently"] = rng.choice(COMMENTS)
    return answers


def _srs_answers(rng: random.Random, level: float) -> list[str]:
    base = 10 * (level - 1) / 4
    return [f"{_clamp(base + rng.gauss(0, 0.6), 0, 10):.1f}" for _ in range(4)]


def _change_trc(answers: dict[str, str]) -> None:
    answers["overall"] = "4" if answers["overall"] == "5" else str(int(answers["overall"]) + 1)


def _change_srs(answers: list[str]) -> None:
    q4 = float(answers[3])
    answers[3] = f"{q4 - 0.1 if q4 >= 5 else q4 + 0.1:.1f}"


def _people(clients: int, practitioners: int, rng: random.Random) -> dict[str, Any]:
    entries: list[dict[str, Any]] = []
    for p in range(practitioners):
        ident = {"system": NPI_SYSTEM, "value": npi(p)}
        entries.append(
            {
                "resource": {
                    "resourceType": "Practitioner",
                    "identifier": [ident],
                    "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}],
                },
                "request": {
                    "method": "PUT",
                    "url": f"Practitioner?identifier={NPI_SYSTEM}|{ident['value']}",
                },
            }
        )
    for c in range(clients):
        ident = {"system": MRN_SYSTEM, "value": mrn(c)}
        birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 50))
        entries.append(
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [ident],
                    "name": [{"family": rng.choice(FAMILY), "given": [rng.choice(GIVEN)]}],
                    "birthDate": birth.date().isoformat(),
                },
                "request": {"method": "PUT", "url": f"Patient?identifier={MRN_SYSTEM}|{mrn(c)}"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _plan(client: int, clinician: str, first: datetime, rng: random.Random) -> dict[str, Any]:
    picks = rng.sample(GOALS, 2)
    start = first.date()
    goals: list[dict[str, Any]] = []
    for g, (words, framing) in enumerate(picks):
        goal: dict[str, Any] = {
            "key": f"g{g + 1}",
            "client_words": words,
            "clinician_framing": framing,
            "proposed_by": rng.choice(("client", "both", "clinician")),
            "lifecycle_status": "active",
            "achievement_status": rng.choice(("in-progress", "improving", "no-change")),
            "priority": "high" if g == 0 else "medium",
            "agreement": {
                "client": {"status": "agree", "priority": "high" if g == 0 else "medium"},
                "clinician": {"status": rng.choice(("agree", "agree", "pending"))},
            },
            "strengths": ["Shows up every week"],
            "start": (start + timedelta(days=7)).isoformat(),
            "targets": [
                {
                    "measure": {"text": "Days per week"},
                    "value": rng.randint(2, 5),
                    "unit": "days per week",
                    "due": (start + timedelta(days=120)).isoformat(),
                }
            ],
            "gas": [{"on": (start + timedelta(days=35)).isoformat(), "score": rng.randint(-1, 1)}],
        }
        if g == 0:
            goal["milestones"] = [
                {
                    "key": "g1-m1",
                    "client_words": "Try it twice in the coming two weeks.",
                    "proposed_by": "both",
                    "lifecycle_status": "active",
                    "achievement_status": "in-progress",
                    "targets": [
                        {
                            "measure": {"text": "Times tried"},
                            "detail": "Twice in two weeks",
                            "due": (start + timedelta(days=21)).isoformat(),
                        }
                    ],
                }
            ]
        goals.append(goal)
    return {
        "key": f"plan-b{client:06d}",
        "patient": f"{MRN_SYSTEM}|{mrn(client)}",
        "clinicians": [f"{NPI_SYSTEM}|{clinician}"],
        "status": "active",
        "start": start.isoformat(),
        "title": "What we are working on",
        "goals": goals,
    }


def _dump_yaml(data: Any, path: Path) -> None:
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh, Dumper=dumper, sort_keys=False, allow_unicode=True, width=100)


SRS_HEADER = [
    "record_id",
    "instrument",
    "instrument_version",
    "authored",
    "status",
    "session",
    "client_mrn",
    "clinician_npi",
    "item.q1",
    "item.q2",
    "item.q3",
    "item.q4",
]


def generate(
    size: int,
    out: Path,
    *,
    sessions: int = SESSIONS,
    changed: float = 0.0,
    seed: int = 20240108,
    goals: bool = True,
) -> Manifest:
    """Write a clinic of about ``size`` assessments (rounded up to whole clients)."""
    clients = clients_for(size, sessions)
    practitioners = max(1, math.ceil(clients / CLIENTS_PER_CLINICIAN))
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not crypto
    every = round(1 / changed) if changed > 0 else 0
    trc_dir = out / "assessments" / "trc-client"
    srs_dir = out / "assessments" / "srs"
    goal_dir = out / "goals"
    for d in (trc_dir, srs_dir, goal_dir):
        d.mkdir(parents=True, exist_ok=True)
    (out / "people.json").write_text(
        json.dumps(_people(clients, practitioners, rng), indent=1) + "\n", encoding="utf-8"
    )
    epoch = datetime(2024, 1, 8, 9, 0, tzinfo=OFFSET)
    n = 0
    srs_rows: list[list[str]] = []
    plans: list[dict[str, Any]] = []
    for c in range(clients):
        crng = random.Random(seed * 1_000_003 + c)  # noqa: S311 - synthetic data
        who = _Client(crng, sessions)
        clinician = npi(c // CLIENTS_PER_CLINICIAN)
        first = epoch + timedelta(days=crng.randrange(0, 180), hours=crng.randrange(0, 8))
        records: list[dict[str, Any]] = []
        for s, level in enumerate(who.levels, start=1):
            when = first + timedelta(weeks=s - 1)
            trc = _trc_answers(crng, level)
            n += 1
            if every and n % every == 0:
                _change_trc(trc)
            records.append(
                {
                    "key": f"b{c:06d}-s{s:02d}-trc",
                    "instrument": "trc-client",
                    "authored": (when + timedelta(minutes=52)).isoformat(),
                    "session": s,
                    "answers": trc,
                }
            )
            srs = _srs_answers(crng, level)
            n += 1
            if every and n % every == 0:
                _change_srs(srs)
            srs_rows.append(
                [
                    f"b{c:06d}-s{s:02d}-srs",
                    "srs",
                    "1.0.0",
                    (when + timedelta(minutes=51)).isoformat(),
                    "completed",
                    str(s),
                    mrn(c),
                    clinician,
                    *srs,
                ]
            )
        _dump_yaml(
            {
                "defaults": {
                    "patient": {"system": MRN_SYSTEM, "value": mrn(c)},
                    "practitioner": {"system": NPI_SYSTEM, "value": clinician},
                },
                "assessments": records,
            },
            trc_dir / f"client-{c:06d}.yaml",
        )
        if goals:
            plans.append(_plan(c, clinician, first, crng))
        if (c + 1) % CLIENTS_PER_CSV == 0 or c == clients - 1:
            path = srs_dir / f"srs-{c // CLIENTS_PER_CSV + 1:04d}.csv"
            with path.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(SRS_HEADER)
                writer.writerows(srs_rows)
            srs_rows = []
        if plans and ((c + 1) % PLANS_PER_FILE == 0 or c == clients - 1):
            _dump_yaml({"plans": plans}, goal_dir / f"plans-{c // PLANS_PER_FILE + 1:04d}.yaml")
            plans = []
    manifest = Manifest(
        size=size,
        clients=clients,
        sessions=sessions,
        practitioners=practitioners,
        assessments=n,
        plans=clients if goals else 0,
        changed=changed,
        seed=seed,
    )
    (out / "manifest.json").write_text(
        json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8"
    )
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size", type=int, default=1000, help="assessments (about)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--changed", type=float, default=0.0, help="fraction to alter")
    parser.add_argument("--seed", type=int, default=20240108)
    parser.add_argument("--no-goals", action="store_true")
    args = parser.parse_args(argv)
    manifest = generate(
        args.size,
        args.out,
        sessions=args.sessions,
        changed=args.changed,
        seed=args.seed,
        goals=not args.no_goals,
    )
    print(json.dumps(manifest.to_json()))


if __name__ == "__main__":
    main()
