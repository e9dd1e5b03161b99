"""The installed versions a run keys its caches by (``alliance_fhir.versions``)."""

from __future__ import annotations

import importlib.metadata

import pytest

from alliance_fhir.versions import installed


@pytest.mark.parametrize("package", ["fhir.resources", "pydantic", "httpx", "alliance-fhir"])
def test_the_header_gives_what_importlib_gives(package: str) -> None:
    """Read from the metadata's headers only, the version is the one the whole file gives
    (the prevalidated list and the source fingerprints are keyed by it)."""
    installed.cache_clear()
    assert installed(package) == importlib.metadata.version(package)


def test_a_package_not_installed_has_no_version() -> None:
    assert installed("no-such-package-alliance-fhir") is None
