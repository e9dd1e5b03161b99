"""Tenants: one deployment, several clinics (``[tenants.NAME]`` sections of the config).

A tenant's settings are the top level's (TOML file and ``ALLIANCE_FHIR_*`` environment) with
its section's values over them, except what must never travel from one clinic to another:

* FHIR credentials are not inherited (``token``, ``token_file``, ``password``,
  ``password_file``, ``smart_private_key_file``): a credential goes only to the server it was
  given for. A tenant's secrets come from ``ALLIANCE_FHIR_TENANT_<NAME>_TOKEN`` /
  ``_PASSWORD`` / ``_STATE_PASSWORD`` / ``_CHECKIN_SECRET`` (``-`` in the name read as ``_``)
  or a ``*_file`` in its section; the top-level state password is inherited only with the
  top-level ``state_url`` (the same database).
* State is partitioned: unless the section names its own, a tenant's SQLite file is
  ``state_path`` with the name inserted (``state.sqlite3`` -> ``state.NAME.sqlite3``, its
  daemon lock beside it), its PostgreSQL schema ``tenant_NAME`` (``-`` as ``_``) in the
  inherited database, and its inbox ``inbox_dir/NAME``. Two tenants sharing a state store or
  an inbox are refused.
* Settings of the whole process (``metrics_*``, ``log_*``) belong to the top level only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from alliance_fhir.config import Settings, tenant_env_prefix
from alliance_fhir.exceptions import ConfigError

__all__ = [
    "NOT_INHERITED",
    "all_tenant_settings",
    "select_tenant",
    "state_location",
    "tenant_names",
    "tenant_settings",
]

#: A tenant never inherits these: credentials for the top level's server.
NOT_INHERITED = ("token", "token_file", "password", "password_file", "smart_private_key_file")
#: Secrets a tenant reads from ``ALLIANCE_FHIR_TENANT_<NAME>_<SECRET>``.
_TENANT_SECRETS = ("token", "password", "state_password", "checkin_secret")
#: Settings of the process, not of a clinic: refused in a tenant's section.
_PROCESS_ONLY = ("tenants", "tenant", "metrics_host", "metrics_port", "log_level", "log_json")


def tenant_names(settings: Settings) -> list[str]:
    return sorted(settings.tenants)


def _derived_state_path(path: Path, name: str) -> Path:
    return path.with_name(f"{path.stem}.{name}{path.suffix}")


def tenant_settings(settings: Settings, name: str) -> Settings:
    """The effective settings of tenant ``name`` (ConfigError naming its section)."""
    if name not in settings.tenants:
        raise ConfigError(
            f"tenant {name!r} is not configured; tenants: {', '.join(tenant_names(settings))}"
        )
    section = dict(settings.tenants[name])
    where = f"[tenants.{name}]"
    refused = sorted(set(section) & set(_PROCESS_ONLY))
    if refused:
        raise ConfigError(
            f"{where}: {', '.join(refused)} applies to the whole process; set it at the top level"
        )
    values: dict[str, Any] = {
        field: getattr(settings, field)
        for field in Settings.model_fields
        if field not in ("tenants", "validation")
    }
    values["validate"] = settings.validation  # the field's TOML/env name (an alias)
    values.update(dict.fromkeys(NOT_INHERITED))
    values["tenant"] = name
    values["state_schema"] = f"tenant_{name.replace('-', '_')}"
    values["inbox_dir"] = settings.inbox_dir / name
    values["state_path"] = _derived_state_path(settings.state_path, name)
    top_url = settings.state_url
    if top_url is not None and top_url.startswith("sqlite:///"):
        # a file of its own beside the top level's, unless the section names its own file
        own = "sqlite:///" + str(_derived_state_path(Path(top_url[len("sqlite:///") :]), name))
        values["state_url"] = None if "state_path" in section else own
    if "state_url" in section:
        # another database: the top level's password is not for it
        values["state_password"] = values["state_password_file"] = None
    values.update(section)
    prefix = tenant_env_prefix(name)
    for secret in _TENANT_SECRETS:
        if f"{secret}_file" in section:
            values[secret] = None
        env = os.environ.get(prefix + secret.upper())
        if env is not None:
            values[secret] = env
    try:
        # Every field is given, so neither the environment nor a TOML file is read again.
        return Settings(**values)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_url=False)
        ]
        raise ConfigError(f"invalid configuration: {where}: " + "; ".join(lines)) from exc


def state_location(settings: Settings) -> str:
    """Where a settings' state lives, for telling two tenants' stores apart."""
    url = settings.effective_state_url
    if url.startswith("sqlite:///"):
        return "sqlite:///" + os.path.abspath(url[len("sqlite:///") :])
    return f"{url.partition('?')[0]} schema {settings.state_schema or '(search_path)'}"


def all_tenant_settings(settings: Settings) -> dict[str, Settings]:
    """Every tenant's settings, by name; ConfigError when one is invalid or two would share
    a state store or an inbox (one clinic's records visible to another)."""
    out = {name: tenant_settings(settings, name) for name in tenant_names(settings)}
    seen: dict[str, str] = {}
    for name, tenant in out.items():
        for what, where in (
            ("state store", state_location(tenant)),
            ("inbox", os.path.abspath(tenant.inbox_dir)),
        ):
            other = seen.setdefault(f"{what} {where}", name)
            if other != name:
                raise ConfigError(
                    f"[tenants.{other}] and [tenants.{name}] share one {what}; "
                    "each tenant needs its own"
                )
    return out


def select_tenant(settings: Settings) -> Settings | None:
    """The selected tenant's settings (``settings.tenant``: ``--tenant`` or
    ``ALLIANCE_FHIR_TENANT``); the settings themselves when no tenants are configured; None
    when tenants are configured and none is selected. Every tenant is checked either way."""
    if not settings.tenants:
        if settings.tenant is not None:
            raise ConfigError(
                f"tenant {settings.tenant!r} selected but the config has no [tenants.*] sections"
            )
        return settings
    tenants = all_tenant_settings(settings)
    if settings.tenant is None:
        return None
    if settings.tenant not in tenants:
        raise ConfigError(
            f"tenant {settings.tenant!r} is not configured; "
            f"tenants: {', '.join(tenant_names(settings))}"
        )
    return tenants[settings.tenant]
