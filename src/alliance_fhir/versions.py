"""Installed package versions, read from the header of their metadata only.

``importlib.metadata.version`` parses a distribution's whole METADATA file with the email
parser: fhir.resources ships its README in it (50 KB), pydantic 140 KB, and the three
look-ups a sync makes (what a source file maps to depends on both versions; the list of
prevalidated resources is for one fhir.resources version) cost ~15 ms of every run. The
version is a header field, and the headers end at the first blank line.
"""

from __future__ import annotations

import functools
import importlib.metadata

__all__ = ["installed"]


@functools.cache  # installed versions do not change while we run
def installed(package: str) -> str | None:
    """The installed version of ``package``, or None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    for line in text.split("\n\n", 1)[0].splitlines():
        name, _, value = line.partition(":")
        if name == "Version":
            return value.strip()
    return dist.version  # no Version header where we looked: the library's own reading
