"""The state-store fixtures: every state-store test runs on SQLite and on PostgreSQL.

* ``state_target`` (function, parametrized ``sqlite`` | ``postgresql``): where a fresh store
  lives (a file in ``tmp_path``, or a new schema in the session's ``postgres`` cluster,
  dropped afterwards); ``state_store``: that store, open.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from statekit import Target

from alliance_fhir.sync.state import StateStore
from pgkit import Cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite3"
        yield Target("sqlite", f"sqlite:///{path}", path=path)
        return
    cluster: Cluster = request.getfixturevalue("postgres")
    schema = cluster.new_schema()
    try:
        yield Target(
            "postgresql",
            cluster.schema_url(schema),
            password=cluster.password,
            cluster=cluster,
            schema=schema,
        )
    finally:
        cluster.drop_schema(schema)


@pytest.fixture
def state_store(state_target: Target) -> Iterator[StateStore]:
    with state_target.open() as store:
        yield store
