"""Fixtures of the adapter tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from adapterkit import server_refs


@pytest.fixture
def refs() -> Callable[[str, str], Mapping[str, Any]]:
    return server_refs
