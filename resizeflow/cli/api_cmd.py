"""``resizeflow api``: serve the Compute v2.1 REST API, and the Image v2 API beside it."""

from __future__ import annotations

import click

from resizeflow import errors
from resizeflow.cli import load_settings, main


@main.command()
@click.option("--bind", help="Address to listen on (RESIZEFLOW_API_BIND, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (RESIZEFLOW_API_PORT, 8774).")
@click.option("--log-level", default="info", show_default=True)
def api(bind: str | None, port: int | None, log_level: str) -> None:
    """Serve the OpenStack Compute API v2.1 at /v2.1 and the Image API v2 at /image."""
    import uvicorn

    from resizeflow.api.app import create_app

    settings = load_settings()
    try:
        app = create_app(settings)
    except errors.ConfigError as exc:
        raise click.ClickException(exc.message) from None
    uvicorn.run(
        app,
        host=bind or settings.api_bind,
        port=settings.api_port if port is None else port,
        log_level=log_level.lower(),
        access_log=log_level.lower() == "debug",
    )
