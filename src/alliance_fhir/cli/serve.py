"""``alliance-fhir serve``: the ASGI app (check-in page, CDS Hooks, SMART view) on uvicorn.

uvicorn's access log is off: check-in paths carry a token, and a log line per request
would copy it into files others read. Our own log lines name codes, never paths.
"""

from __future__ import annotations

import click

from alliance_fhir.cli.context import Ctx, pass_ctx

__all__ = ["serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@pass_ctx
def serve(ctx: Ctx, host: str, port: int) -> None:
    """Serve the client check-in page (links from `alliance-fhir checkin link`) and the
    CDS Hooks service (/cds-services) and the SMART clinician view (/launch).

    Put it behind your TLS proxy for use outside this machine; it never logs request paths."""
    import uvicorn  # only this command needs the server

    from alliance_fhir.web.app import create_app

    settings = ctx.settings
    app = create_app(settings)
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=False,
        server_header=False,
        log_level=settings.log_level.lower() if ctx.verbose else "warning",
    )
