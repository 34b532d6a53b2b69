"""Commands for the resize lifecycle: servers, flavors, migrations and workflows.

Each command calls the compute service layer in this process, or the REST API
with ``--url``. ``--wait`` follows the operation live and exits non-zero if it
ends in error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from resizeflow.cli import load_settings, main
from resizeflow.cli.backend import Backend, HttpBackend, LocalBackend
from resizeflow.cli.progress import follow, steps_table
from resizeflow.states import PowerState

F = TypeVar("F", bound=Callable[..., Any])


def backend_options(fn: F) -> F:
    """``--url`` and ``--token`` on every command, resolved to a :class:`Backend`."""

    @click.option(
        "--url",
        envvar="RESIZEFLOW_URL",
        help="The API endpoint (e.g. http://127.0.0.1:8774/v2.1, or RESIZEFLOW_URL); "
        "in-process when omitted.",
    )
    @click.option(
        "--token",
        envvar="RESIZEFLOW_TOKEN",
        default="admin:admin",
        show_default=True,
        help="X-Auth-Token: user:project under noauth, or a token from the tokens file.",
    )
    @wraps(fn)
    def wrapper(*args: Any, url: str | None, token: str, **kwargs: Any) -> Any:
        with _backend(url, token) as backend:
            return fn(backend, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def _backend(url: str | None, token: str) -> Iterator[Backend]:
    # NOTE: the service layer and httpx log each request at INFO, as a server
    # should; a command line shows its own output, and only their warnings.
    level = max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    for name in ("resizeflow", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(level)
    backend: Backend = HttpBackend(url, token) if url else LocalBackend(load_settings(), token)
    try:
        yield backend
    finally:
        backend.close()


def wait_options(fn: F) -> F:
    fn = click.option("--timeout", default=300.0, show_default=True, help="Seconds --wait waits.")(
        fn
    )
    return click.option("--wait", is_flag=True, help="Follow the operation until it ends.")(fn)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    table = Table()
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


# Power states as the openstack CLI prints them (Nova's API returns the numbers).
POWER_STATES = {
    PowerState.NOSTATE: "NOSTATE",
    PowerState.RUNNING: "Running",
    PowerState.PAUSED: "Paused",
    PowerState.SHUTDOWN: "Shutdown",
    PowerState.CRASHED: "Crashed",
    PowerState.SUSPENDED: "Suspended",
}
UUID_RE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


def power_state(value: Any) -> str:
    try:
        return POWER_STATES[PowerState(int(value))]
    except (TypeError, ValueError, KeyError):
        return "" if value is None else str(value)


def resolve_flavor(backend: Backend, ref: str) -> str:
    """A flavor's id from its id or its name, as the openstack CLI resolves it."""
    flavors = backend.flavors()
    if any(str(f["id"]) == ref for f in flavors):
        return ref
    named = [str(f["id"]) for f in flavors if f.get("name") == ref]
    if len(named) > 1:
        raise click.ClickException(f"More than one flavor exists with the name '{ref}'.")
    if not named:
        raise click.ClickException(f"No flavor with a name or ID of '{ref}' exists.")
    return named[0]


def resolve_server(backend: Backend, ref: str) -> str:
    """A server's id from its id or its name; a name must name exactly one server."""
    if UUID_RE.fullmatch(ref):
        return ref
    named = [str(s["id"]) for s in backend.servers(False) if s.get("name") == ref]
    if not named:
        # An admin may name another project's server, as with `openstack server show`.
        with contextlib.suppress(click.ClickException):
            named = [str(s["id"]) for s in backend.servers(True) if s.get("name") == ref]
    if len(named) > 1:
        raise click.ClickException(f"More than one server exists with the name '{ref}'.")
    if not named:
        raise click.ClickException(f"No server with a name or ID of '{ref}' exists.")
    return named[0]


def _flavor_name(server: dict[str, Any]) -> str:
    flavor = server.get("flavor", {})
    return str(flavor.get("original_name") or flavor.get("id", ""))


def _finish(backend: Backend, server_id: str, op: str, wait: bool, timeout: float) -> None:
    if wait:
        follow(backend, server_id, op, timeout=timeout)
        click.echo(f"{op} of {server_id} finished")
    else:
        click.echo(f"{op} of {server_id} accepted")


# -- server ---------------------------------------------------------------------
@main.group()
def server() -> None:
    """Servers: boot, resize, migrate, confirm, revert, stop, start, reboot, delete."""


@server.command("create")
@click.argument("name")
@click.option("--flavor", required=True, help="Flavor name or id.")
@click.option("--host", help="Force a compute host (admin).")
@click.option("--network", type=click.Choice(["auto", "none"]), default="auto", show_default=True)
@click.option("--property", "properties", multiple=True, help="Metadata KEY=VALUE (repeatable).")
@wait_options
@backend_options
def server_create(
    backend: Backend,
    name: str,
    flavor: str,
    host: str | None,
    network: str,
    properties: tuple[str, ...],
    wait: bool,
    timeout: float,
) -> None:
    """Boot a server NAME from a flavor."""
    metadata = {}
    for prop in properties:
        key, sep, value = prop.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{prop!r} is not KEY=VALUE", param_hint="--property")
        metadata[key] = value
    uuid, _ = backend.create(name, resolve_flavor(backend, flavor), host, network, metadata)
    click.echo(uuid)
    if wait:
        follow(backend, uuid, "create", timeout=timeout)


@server.command("list")
@click.option("--all-projects", is_flag=True, help="Every project's servers (admin).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@backend_options
def server_list(backend: Backend, all_projects: bool, as_json: bool) -> None:
    """List servers."""
    found = backend.servers(all_projects)
    if as_json:
        _echo_json(found)
        return
    _table(
        ["ID", "Name", "Status", "Task", "Power", "Host", "Flavor"],
        [
            [
                s["id"],
                s["name"],
                s["status"],
                s.get("OS-EXT-STS:task_state"),
                power_state(s.get("OS-EXT-STS:power_state")),
                s.get("OS-EXT-SRV-ATTR:host"),
                _flavor_name(s),
            ]
            for s in found
        ],
    )


@server.command("show")
@click.argument("server_id")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@backend_options
def server_show(backend: Backend, server_id: str, as_json: bool) -> None:
    """Show a server, by name or id."""
    found = backend.server(resolve_server(backend, server_id))
    if as_json:
        _echo_json(found)
        return
    rows = [
        [k, json.dumps(v) if isinstance(v, dict | list) else v]
        for k, v in sorted(found.items())
        if k != "links"
    ]
    rows = [[k, power_state(v) if k == "OS-EXT-STS:power_state" else v] for k, v in rows]
    _table(["Field", "Value"], rows)


def _action(
    name: str, key: str, help_text: str, value: Callable[..., Any] = lambda **_: None
) -> None:
    @server.command(name, help=help_text)
    @click.argument("server_id")
    @wait_options
    @backend_options
    def command(backend: Backend, server_id: str, wait: bool, timeout: float, **kw: Any) -> None:
        server_id = resolve_server(backend, server_id)
        if "flavor" in kw:
            kw["flavor"] = resolve_flavor(backend, kw["flavor"])
        backend.action(server_id, key, value(**kw))
        _finish(backend, server_id, key, wait, timeout)

    if key == "resize":
        click.option("--flavor", required=True, help="The new flavor's name or id.")(command)


_action(
    "resize",
    "resize",
    "Resize a server to another flavor.",
    lambda flavor: {"flavorRef": flavor},
)
_action("confirm-resize", "confirmResize", "Confirm a finished resize.")
_action("revert-resize", "revertResize", "Revert a finished resize.")
_action("stop", "os-stop", "Stop (power off) a server.")
_action("start", "os-start", "Start a stopped server.")


@server.command("migrate")
@click.argument("server_id")
@click.option("--host", help="The host to move it to (admin); else the scheduler picks one.")
@wait_options
@backend_options
def server_migrate(
    backend: Backend, server_id: str, host: str | None, wait: bool, timeout: float
) -> None:
    """Cold-migrate a server to another host at its flavor (admin); confirm or revert it after."""
    server_id = resolve_server(backend, server_id)
    backend.action(server_id, "migrate", {"host": host} if host else None)
    _finish(backend, server_id, "migrate", wait, timeout)


@server.command("reboot")
@click.argument("server_id")
@click.option("--hard", is_flag=True, help="Destroy and define the domain again (also from ERROR).")
@wait_options
@backend_options
def server_reboot(backend: Backend, server_id: str, hard: bool, wait: bool, timeout: float) -> None:
    """Reboot a server: a clean shutdown and a start, or with --hard a new domain."""
    server_id = resolve_server(backend, server_id)
    backend.action(server_id, "reboot", {"type": "HARD" if hard else "SOFT"})
    _finish(backend, server_id, "reboot", wait, timeout)


@server.command("reset-state")
@click.argument("server_id")
@click.option("--state", type=click.Choice(["active", "error"]), required=True)
@backend_options
def server_reset_state(backend: Backend, server_id: str, state: str) -> None:
    """Declare a server's state (admin); a workflow still open for it is ended."""
    server_id = resolve_server(backend, server_id)
    backend.action(server_id, "os-resetState", {"state": state})
    click.echo(f"{server_id} is {state}")


@server.command("console-log")
@click.argument("server_id")
@click.option("--lines", type=int, help="Only the last N lines.")
@backend_options
def server_console_log(backend: Backend, server_id: str, lines: int | None) -> None:
    """Print the server's console log, as the host that runs it has it."""
    click.echo(backend.console(resolve_server(backend, server_id), lines), nl=False)


@server.command("delete")
@click.argument("server_id")
@wait_options
@backend_options
def server_delete(backend: Backend, server_id: str, wait: bool, timeout: float) -> None:
    """Delete a server (one awaiting confirmation is confirmed first)."""
    server_id = resolve_server(backend, server_id)
    backend.delete(server_id)
    _finish(backend, server_id, "delete", wait, timeout)


# -- flavor, migration, workflow ------------------------------------------------
@main.group()
def flavor() -> None:
    """Flavors."""


@flavor.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@backend_options
def flavor_list(backend: Backend, as_json: bool) -> None:
    """List flavors."""
    found = backend.flavors()
    if as_json:
        _echo_json(found)
        return
    _table(
        ["ID", "Name", "VCPUs", "RAM (MB)", "Disk (GB)", "Public"],
        [
            [f["id"], f["name"], f["vcpus"], f["ram"], f["disk"], f["os-flavor-access:is_public"]]
            for f in found
        ],
    )


@main.group()
def migration() -> None:
    """Migrations (admin)."""


@migration.command("list")
@click.option("--server", "instance_uuid", help="Only this server's migrations.")
@click.option("--status", help="Only migrations in this status.")
@click.option("--source-compute", help="Only migrations from this host.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
@backend_options
def migration_list(
    backend: Backend,
    instance_uuid: str | None,
    status: str | None,
    source_compute: str | None,
    as_json: bool,
) -> None:
    """List migrations, newest first."""
    found = backend.migrations(
        instance_uuid=instance_uuid, status=status, source_compute=source_compute
    )
    if as_json:
        _echo_json(found)
        return
    _table(
        ["ID", "Server", "Status", "Source", "Dest", "Old flavor", "New flavor", "Updated"],
        [
            [
                m["id"],
                m["instance_uuid"],
                m["status"],
                m["source_compute"],
                m["dest_compute"],
                m["old_instance_type_id"],
                m["new_instance_type_id"],
                m["updated_at"],
            ]
            for m in found
        ],
    )


@main.group()
def workflow() -> None:
    """Workflows: the step journal of a migration (admin)."""


def _workflow_verb(verb: str, help_text: str) -> None:
    @workflow.command(verb, help=help_text)
    @click.argument("migration_id", type=click.IntRange(min=1))
    @backend_options
    def command(backend: Backend, migration_id: int) -> None:
        outcome = backend.workflow_action(migration_id, verb)
        click.echo(f"migration {migration_id}: {outcome['result']}: {outcome['message']}")


_workflow_verb("retry", "Resume MIGRATION_ID's failed workflow at its failed step (admin).")
_workflow_verb(
    "abort",
    "End MIGRATION_ID's failed or stalled workflow: compensate where it is safe, "
    "else leave the server in ERROR with a fault (admin).",
)


@workflow.command("show")
@click.argument("migration_id", type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the journal as JSON.")
@backend_options
def workflow_show(backend: Backend, migration_id: int, as_json: bool) -> None:
    """Show MIGRATION_ID's steps: host, attempts, duration and error of each."""
    found = backend.workflow(migration_id)
    if as_json:
        _echo_json(found)
        return
    mig = found["migration"]
    title = (
        f"migration {mig['id']} of {mig['instance_uuid']}: {mig['status']} "
        f"({mig['source_compute']} -> {mig['dest_compute']})"
    )
    console = Console()
    flows: list[str] = []
    for st in found["steps"]:
        if st["flow"] not in flows:
            flows.append(st["flow"])
    if not flows:
        console.print(title)
        console.print("no steps recorded")
    for fl in flows:
        console.print(
            steps_table([s for s in found["steps"] if s["flow"] == fl], f"{title} — {fl}")
        )
