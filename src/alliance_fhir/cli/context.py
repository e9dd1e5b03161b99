"""What every command shares: lazily loaded settings and the API they open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.cli.progress import Bar
from alliance_fhir.config import Settings, load_settings
from alliance_fhir.exceptions import ConfigError
from alliance_fhir.tenants import select_tenant, tenant_names

#: Commands that need no server: with tenants configured and none selected they use the top
#: level's settings (``config show`` prints them, with the tenants' sections).
LOCAL_COMMANDS = frozenset({"instruments", "validate", "score", "config"})


class Ctx:
    """Lazily loaded settings shared by the subcommands."""

    def __init__(
        self,
        config: Path | None,
        overrides: dict[str, Any],
        verbose: bool,
        *,
        command: str | None = None,
    ) -> None:
        self.config = config
        self.overrides = overrides
        self.verbose = verbose
        #: The subcommand invoked: decides what a config with tenants and no selection means.
        self.command = command
        self._root: Settings | None = None
        self._selected: Settings | None = None
        #: ``--show-server-text``: the server's error text on a terminal (errors.error_lines).
        self.show_server_text = False
        self._settings: Settings | None = None

    @property
    def root_settings(self) -> Settings:
        """The top level's settings (with every tenant checked and ``tenant`` the selection)."""
        if self._root is None:
            self._root = load_settings(self.config, **self.overrides)
            # Interactive commands print their own summary; the run's log lines (PHI-free)
            # show with --verbose. The daemon logs at the configured level.
            level = self._root.log_level if self.verbose else "WARNING"
            alog.configure(level=level, json=self._root.log_json)
            selected = select_tenant(self._root)
            if (
                selected is not None
                and selected is not self._root
                and self.overrides.get("server_url")
            ):  # the command line wins over a tenant's section too
                selected = selected.model_copy(update={"server_url": self._root.server_url})
            self._selected = selected
        return self._root

    @property
    def settings(self) -> Settings:
        """The settings of the one server this command acts on: the selected tenant's, or the
        top level's without tenants. Tenants and no selection: exit 2 naming them (a local
        command gets the top level's)."""
        if self._settings is None:
            root = self.root_settings
            if self._selected is None and self.command not in LOCAL_COMMANDS:
                names = tenant_names(root)
                raise ConfigError(
                    f"{len(names)} tenants are configured ({', '.join(names)}): choose one "
                    "with --tenant NAME or ALLIANCE_FHIR_TENANT"
                )
            self._settings = self._selected or root
        return self._settings

    @property
    def every_tenant(self) -> list[str]:
        """The tenants to run for when tenants are configured and none is selected (status,
        doctor, daemon); [] otherwise."""
        root = self.root_settings
        return tenant_names(root) if self._selected is None and root.tenants else []


pass_ctx = click.make_pass_decorator(Ctx)


def open_api(ctx: Ctx, settings: Settings | None = None) -> AllianceFhir:
    """A new API over the settings (``ctx.settings`` unless given: one tenant's) with the
    progress bar attached; use it in ``with``."""
    api = AllianceFhir(settings or ctx.settings)
    api.progress = Bar()
    return api
