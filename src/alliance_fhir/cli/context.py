"""What every command shares: lazily loaded settings and the API they open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from alliance_fhir import log as alog
from alliance_fhir.api import AllianceFhir
from alliance_fhir.cli.progress import Bar
from alliance_fhir.config import Settings, load_settings


class Ctx:
    """Lazily loaded settings shared by the subcommands."""

    def __init__(self, config: Path | None, overrides: dict[str, Any], verbose: bool) -> None:
        self.config = config
        self.overrides = overrides
        self.verbose = verbose
        #: ``--show-server-text``: the server's error text on a terminal (errors.error_lines).
        self.show_server_text = False
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, **self.overrides)
            # Interactive commands print their own summary; the run's log lines (PHI-free)
            # show with --verbose. The daemon logs at the configured level.
            level = self._settings.log_level if self.verbose else "WARNING"
            alog.configure(level=level, json=self._settings.log_json)
        return self._settings


pass_ctx = click.make_pass_decorator(Ctx)


def open_api(ctx: Ctx) -> AllianceFhir:
    """A new API over the settings with the progress bar attached; use it in ``with``."""
    api = AllianceFhir(ctx.settings)
    api.progress = Bar()
    return api
