"""Where the bundled ``mappings/`` data lives, installed or in a source checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def bundled_mappings() -> Path:
    """The directory of shipped mappings.

    A wheel carries it inside the package (``alliance_fhir/mappings``); an editable install of
    a checkout reads the repository's top-level ``mappings/`` directly.
    """
    packaged = Path(str(resources.files("alliance_fhir"))) / "mappings"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "mappings"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("alliance-fhir's bundled mappings/ directory is missing")
