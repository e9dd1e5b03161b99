"""Fixtures shared by the unit tests of several packages.

Convention: a fixture used in more than one test folder lives in the ``conftest.py`` of
their nearest common folder (here, or ``tests/integration/conftest.py``); ``*kit.py``
modules hold plain helpers (builders, fakes, constants), never fixtures.
"""

from __future__ import annotations

import pytest

from alliance_fhir.instruments.library import InstrumentLibrary, load_library


@pytest.fixture(scope="session")
def library() -> InstrumentLibrary:
    """The shipped instruments, loaded once per session (read-only: tests never change it)."""
    return load_library()
