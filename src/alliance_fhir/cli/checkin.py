"""``alliance-fhir checkin link``: a single-use, expiring link a client opens on a tablet."""

from __future__ import annotations

import click

from alliance_fhir.api.checkin import Checkins
from alliance_fhir.cli.context import Ctx, pass_ctx
from alliance_fhir.cli.render import out

__all__ = ["checkin"]


@click.group()
def checkin() -> None:
    """Client check-ins answered on the page of `alliance-fhir serve`."""


@checkin.command("link")
@click.option(
    "--patient",
    required=True,
    help="The client: system|value, or an MRN with patient_identifier_system configured.",
)
@click.option("--instrument", required=True, help="Instrument id (e.g. srs).")
@click.option("--encounter", help="Encounter id the response belongs to.")
@click.option(
    "--practitioner",
    help="system|value of the clinician who answers a clinician-completed instrument.",
)
@click.option(
    "--expires", default="2h", show_default=True, help="Lifetime: 30m, 2h, 1d (at most 7d)."
)
@pass_ctx
def link(
    ctx: Ctx,
    patient: str,
    instrument: str,
    encounter: str | None,
    practitioner: str | None,
    expires: str,
) -> None:
    """Print a check-in link: usable once, until it expires, naming no patient in the URL.

    Its key comes from ALLIANCE_FHIR_CHECKIN_SECRET or checkin_secret_file (a 0600 file)."""
    checkins = Checkins(ctx.settings)
    try:
        made = checkins.link(
            patient=patient,
            instrument=instrument,
            encounter=encounter,
            practitioner=practitioner,
            expires=expires,
        )
    finally:
        checkins.close()
    out.print(made.url, markup=False, soft_wrap=True)
    out.print(f"expires: {made.expires.isoformat(timespec='seconds')}", markup=False)
