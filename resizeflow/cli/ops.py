"""Commands that run resizeflow's services: the database schema and the workers."""

from __future__ import annotations

import click

from resizeflow.cli import load_settings, main


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema and seed the classic flavors."""
    from resizeflow.db.migrate import upgrade
    from resizeflow.db.session import Database

    database = Database(load_settings().db_url)
    upgrade(database)
    database.dispose()
    url = database.engine.url.render_as_string(hide_password=True)
    click.echo(f"database at {url} is up to date")


@main.command()
@click.option("--host", help="The compute host this worker serves (RESIZEFLOW_HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(host: str | None, loglevel: str) -> None:
    """Run the Celery worker of one compute host, consuming compute.HOST."""
    from resizeflow.worker import run

    settings = load_settings()
    if host is not None:
        try:
            settings = settings.with_host(host)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--host") from None
    run(settings, loglevel=loglevel)


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run the periodic tasks: auto-confirm and incomplete-migration cleanup."""
    from resizeflow.periodic import run

    run(load_settings(), loglevel=loglevel)


@main.command()
@click.option("--port", type=int, help="Port to serve on (RESIZEFLOW_FLOWER_PORT).")
@click.option("--address", default="127.0.0.1", show_default=True)
def flower(port: int | None, address: str) -> None:
    """Run Flower on the broker, with basic auth from RESIZEFLOW_FLOWER_BASIC_AUTH."""
    from resizeflow.celery_app import make_app

    settings = load_settings()
    argv = ["flower", f"--port={port or settings.flower_port}", f"--address={address}"]
    if settings.flower_basic_auth:
        argv.append(f"--basic_auth={settings.flower_basic_auth}")
    elif address not in ("127.0.0.1", "localhost", "::1"):
        raise click.ClickException(
            "refusing to serve Flower beyond localhost without RESIZEFLOW_FLOWER_BASIC_AUTH"
        )
    make_app(settings).start(argv=argv)
