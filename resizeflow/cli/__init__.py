"""The ``resizeflow`` command line.

Commands live in modules of this package by topic: ``ops`` runs services
(database, workers); each registers itself on :data:`main`.
"""

from __future__ import annotations

import sys

import click

from resizeflow import errors, logs
from resizeflow.conf import Settings


def load_settings() -> Settings:
    """Settings from the environment; a bad value becomes a one-line CLI error."""
    try:
        return Settings.from_env()
    except errors.ConfigError as exc:
        raise click.ClickException(exc.message) from None


@click.group()
def main() -> None:
    """resizeflow: finish VM resizes as Celery workflows on per-host queues."""
    settings = load_settings()
    logs.setup(settings.log_level, settings.log_format)


def entrypoint() -> None:
    from resizeflow.cli import api_cmd, bench, demo, ops, servers  # noqa: F401  (registers their commands)

    try:
        main(standalone_mode=True)
    except errors.ResizeflowError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
