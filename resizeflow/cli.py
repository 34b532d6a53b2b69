"""The ``resizeflow`` command line."""

from __future__ import annotations

import logging
import sys

import click

from resizeflow import errors
from resizeflow.conf import Settings


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except errors.ConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.group()
def main() -> None:
    """resizeflow: finish VM resizes as Celery workflows on per-host queues."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema and seed the classic flavors."""
    from resizeflow.db.migrate import upgrade
    from resizeflow.db.session import Database

    settings = _settings()
    database = Database(settings.db_url)
    upgrade(database)
    database.dispose()
    click.echo(
        f"database at {database.engine.url.render_as_string(hide_password=True)} is up to date"
    )


@main.command()
@click.option("--host", help="The compute host this worker serves (RESIZEFLOW_HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(host: str | None, loglevel: str) -> None:
    """Run the Celery worker of one compute host, consuming compute.HOST."""
    from resizeflow.worker import run

    settings = _settings()
    if host is not None:
        try:
            settings = settings.with_host(host)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--host") from None
    run(settings, loglevel=loglevel)


def entrypoint() -> None:
    try:
        main(standalone_mode=True)
    except errors.ResizeflowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
