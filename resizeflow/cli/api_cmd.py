"""``resizeflow api``: serve the Compute v2.1 REST API, and the Image v2 API beside it."""

from __future__ import annotations

import logging

import click

from resizeflow import errors
from resizeflow.cli import is_local_address, load_settings, main
from resizeflow.conf import Settings

log = logging.getLogger(__name__)


def check_exposure(settings: Settings, host: str) -> None:
    """Refuse ``noauth`` beyond localhost, where anyone could claim to be admin, unless
    RESIZEFLOW_NOAUTH_ANY_ADDRESS says so; then say so in the log, at every start."""
    if settings.auth != "noauth" or is_local_address(host):
        return
    if not settings.noauth_any_address:
        raise click.ClickException(
            f"refusing to serve the API on {host} with RESIZEFLOW_AUTH=noauth, which takes "
            "any caller at their word (admin included): listen on localhost, use "
            "RESIZEFLOW_AUTH=keystone or tokens, or set RESIZEFLOW_NOAUTH_ANY_ADDRESS=true"
        )
    log.warning(
        "serving the API on %s with RESIZEFLOW_AUTH=noauth: anyone who reaches it may act "
        "as any user and project, admin included (RESIZEFLOW_NOAUTH_ANY_ADDRESS=true)",
        host,
    )


@main.command()
@click.option("--bind", help="Address to listen on (RESIZEFLOW_API_BIND, default 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (RESIZEFLOW_API_PORT, 8774).")
@click.option("--log-level", default="info", show_default=True)
def api(bind: str | None, port: int | None, log_level: str) -> None:
    """Serve the OpenStack Compute API v2.1 at /v2.1 and the Image API v2 at /image."""
    import uvicorn

    from resizeflow.api.app import create_app

    settings = load_settings()
    host = bind or settings.api_bind
    # Before the app is built: a refused start touches neither database nor broker.
    check_exposure(settings, host)
    try:
        app = create_app(settings)
    except errors.ConfigError as exc:
        raise click.ClickException(exc.message) from None
    uvicorn.run(
        app,
        host=host,
        port=settings.api_port if port is None else port,
        log_level=log_level.lower(),
        access_log=log_level.lower() == "debug",
    )
