"""The ``resizeflow`` command line.

Commands live in modules of this package by topic: ``ops`` runs services
(database, workers); each registers itself on :data:`main`.
"""

from __future__ import annotations

import ipaddress
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


def is_local_address(address: str) -> bool:
    """Whether listening on ``address`` keeps a server to this machine: ``localhost``,
    127.0.0.0/8 or ::1 (not 0.0.0.0 or ::, which are every address)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve to anything


@click.group()
def main() -> None:
    """resizeflow: finish VM resizes as Celery workflows on per-host queues."""
    settings = load_settings()
    logs.setup(settings.log_level, settings.log_format)


# Commands that other installed packages add (the benchmark's ``bench``):
# entry points ``NAME = "module:click_command"`` in this group.
PLUGIN_GROUP = "resizeflow.commands"


def load_plugins() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name not in main.commands:
            main.add_command(ep.load(), ep.name)


def entrypoint() -> None:
    from resizeflow.cli import api_cmd, demo, ops, servers  # noqa: F401  (registers their commands)

    load_plugins()
    # NOTE: click's own error output is a usage block of several lines; an
    # operator gets one line per error, the same for a bad option as for a
    # refused request, in-process or through --url.
    try:
        code = main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except errors.ResizeflowError as exc:
        click.echo(f"Error: {exc.message}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
