"""Per-type write switches (issue #13 item 1): ``[write_modes]`` overrides the statement for
one type; a record group goes the weakest way any of its types needs; config names a bad
type or value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alliance_fhir.adapters.record import Desired
from alliance_fhir.config import WRITE_MODE_TYPES, load_settings
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.fhir import Capabilities
from alliance_fhir.sync.plan import Action
from alliance_fhir.sync.strategies import WRITTEN_TYPES, WritePolicy

NS = "http://x/id"


def statement(system: tuple[str, ...] = ("transaction", "batch")) -> dict[str, Any]:
    return {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "mode": "server",
                "interaction": [{"code": c} for c in system],
                "resource": [
                    {
                        "type": t,
                        "interaction": [{"code": c} for c in ("create", "update", "search-type")],
                        "conditionalCreate": True,
                    }
                    for t in WRITTEN_TYPES
                ],
            }
        ],
    }


def action(kind: str, key: str, rtype: str, group: str) -> Action:
    resource = {"resourceType": rtype, "identifier": [{"system": f"{NS}/{kind}", "value": key}]}
    desired = Desired(kind, key, resource, f"identifier={NS}/{kind}|{key}", group=group)
    return Action("create", desired, None)


def test_one_type_overridden_the_others_follow_the_statement() -> None:
    caps = Capabilities.from_statement(statement())
    policy = WritePolicy.from_capabilities(
        caps, write_modes={"Observation": "single", "Goal": "auto"}
    )
    assert policy.mode == "transaction"
    assert policy.mode_of("Observation") == "single"
    assert policy.mode_of("Goal") == "transaction"  # auto: as the statement says
    assert policy.mode_of("QuestionnaireResponse") == "transaction"


def test_a_group_goes_the_weakest_way_any_of_its_types_needs() -> None:
    policy = WritePolicy(mode="transaction", type_modes={"Observation": "single", "Goal": "batch"})
    checkin = [
        action("qr", "1", "QuestionnaireResponse", "a:1"),
        action("s", "1", "Observation", "a:1"),
    ]
    other = [action("qr", "2", "QuestionnaireResponse", "a:2")]
    plan = [action("goal", "g", "Goal", "p:1"), action("plan", "p", "CarePlan", "p:1")]
    parts = policy.by_mode([checkin, other, plan])
    assert [(mode, [[a.desired.key for a in g] for g in groups]) for mode, groups in parts] == [
        ("transaction", [["2"]]),
        ("batch", [["g", "p"]]),
        ("single", [["1", "1"]]),
    ]


def test_write_modes_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "alliance-fhir.toml"
    config.write_text('[write_modes]\nObservation = "single"\n')
    assert load_settings(config).write_modes == {"Observation": "single"}


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[write_modes]\nObservaton = "single"\n', "write_modes: Value error, Observaton: not a"),
        ('[write_modes]\nGoal = "bulk"\n', "write_modes.Goal: Input should be 'auto', 'trans"),
    ],
)
def test_config_names_a_bad_type_or_value(tmp_path: Path, toml: str, named: str) -> None:
    config = tmp_path / "alliance-fhir.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as bad:
        load_settings(config)
    assert named in str(bad.value)


def test_the_config_knows_the_types_sync_writes() -> None:
    assert set(WRITE_MODE_TYPES) == set(WRITTEN_TYPES)
