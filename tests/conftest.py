"""Fixtures shared by unit and integration tests (see ``tests/unit/conftest.py`` for the
convention).

* ``postgres`` (session): a PostgreSQL cluster for state-store tests, started on first use
  through ``scripts/postgres`` (``pgkit`` says where it comes from); it fails, never skips,
  when PostgreSQL cannot be started.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pgkit import Cluster, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
