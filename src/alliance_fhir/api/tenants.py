"""Tenants from Python: an :class:`AllianceFhir` per clinic of a ``[tenants.NAME]`` config.

>>> settings = load_settings(Path("alliance-fhir.toml"))
>>> with open_tenant(settings, "north-clinic") as af:
...     af.sync().ok
True

The merge rules (what a tenant inherits, its secrets, its state partition) are
``alliance_fhir.tenants``'s; each API holds its own client and state store, so tenants share
nothing.
"""

from __future__ import annotations

from alliance_fhir.api import AllianceFhir
from alliance_fhir.config import Settings
from alliance_fhir.tenants import all_tenant_settings, select_tenant, tenant_names, tenant_settings

__all__ = [
    "all_tenant_settings",
    "open_tenant",
    "open_tenants",
    "select_tenant",
    "tenant_names",
    "tenant_settings",
]


def open_tenant(settings: Settings, name: str) -> AllianceFhir:
    """The API of tenant ``name`` (ConfigError naming its section when it is unusable)."""
    return AllianceFhir(tenant_settings(settings, name))


def open_tenants(settings: Settings) -> dict[str, AllianceFhir]:
    """Every tenant's API, by name (every section checked first); close each one."""
    return {name: AllianceFhir(t) for name, t in all_tenant_settings(settings).items()}
