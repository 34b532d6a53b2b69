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
