"""Commands that run resizeflow's services: the database schema and the workers."""

from __future__ import annotations

from dataclasses import replace

import click

from resizeflow import errors
from resizeflow.cli import is_local_address, load_settings, main
from resizeflow.conf import Settings


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


def _autoscale(raw: str | None) -> tuple[int, int] | None:
    """``MAX[,MIN]`` as Celery spells it; MIN defaults to 1."""
    if raw is None:
        return None
    hi, _, lo = raw.partition(",")
    try:
        bounds = int(hi), int(lo or 1)
    except ValueError:
        raise click.BadParameter(
            f"expected MAX[,MIN], got {raw!r}", param_hint="--autoscale"
        ) from None
    if not 1 <= bounds[1] <= bounds[0]:
        raise click.BadParameter("expected 1 <= MIN <= MAX", param_hint="--autoscale")
    return bounds


@main.command()
@click.option("--host", help="The compute host this worker serves (RESIZEFLOW_HOST).")
@click.option(
    "--register",
    is_flag=True,
    help="Add the host if it is not known yet (its first worker); otherwise it is refused.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=1000),
    help="Tasks at once in this process (RESIZEFLOW_WORKER_CONCURRENCY, 4).",
)
@click.option(
    "--pool",
    type=click.Choice(["threads", "prefork", "solo"]),
    help="Celery pool (RESIZEFLOW_WORKER_POOL, threads; test:/// needs threads or solo).",
)
@click.option(
    "--autoscale",
    metavar="MAX[,MIN]",
    help="Grow the pool up to MAX tasks at once under load, shrink it to MIN when idle.",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(
    host: str | None,
    register: bool,
    concurrency: int | None,
    pool: str | None,
    autoscale: str | None,
    loglevel: str,
) -> None:
    """Run one Celery worker process of a compute host, consuming compute.HOST.

    Each process is its own Celery node, HOST-N@MACHINE. Run more of them for
    one host to scale it (on qemu:///), or give one more --concurrency.
    """
    from resizeflow.worker import run

    settings = load_settings()
    if host is not None:
        try:
            settings = settings.with_host(host)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--host") from None
    settings = replace(
        settings,
        worker_pool=pool or settings.worker_pool,
        worker_concurrency=concurrency or settings.worker_concurrency,
    )
    run(settings, loglevel=loglevel, register=register, autoscale=_autoscale(autoscale))


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def storage(loglevel: str) -> None:
    """Run the block-storage host RESIZEFLOW_STORAGE_HOST, consuming storage.NAME.

    It starts (or finds) its qemu-storage-daemon, exports every connection it
    has recorded, then answers the API's and the compute hosts' calls.
    """
    from resizeflow.storage.host import run

    run(load_settings(), loglevel=loglevel)


@main.command()
def network() -> None:
    """Run the DHCP agent RESIZEFLOW_DHCP_HOST: dnsmasq per network, in a namespace each.

    It reconciles at start and every RESIZEFLOW_DHCP_SYNC_INTERVAL seconds:
    each network with a DHCP-enabled subnet is served over its bridge and
    VXLAN; SIGTERM takes every namespace and dnsmasq down again.
    """
    from resizeflow.dhcp.agent import run

    try:
        run(load_settings())
    except errors.ConfigError as exc:  # a tunnel address that does not resolve
        raise click.ClickException(exc.message) from None


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
def beat(loglevel: str) -> None:
    """Run the periodic tasks: auto-confirm and incomplete-migration cleanup."""
    from resizeflow.periodic import run

    run(load_settings(), loglevel=loglevel)


# What Flower's task list shows: the step's name, its argument (the migration
# id of a workflow step, the instance uuid of an instance operation), the
# worker process that ran it (``beat@...`` for the periodic tasks), then its
# state and timing.
FLOWER_TASK_COLUMNS = "name,args,worker,state,received,runtime"


def flower_argv(settings: Settings, port: int, address: str) -> list[str]:
    """Flower's command line; refuses to listen beyond localhost without basic auth."""
    argv = [
        "flower",
        f"--port={port}",
        f"--address={address}",
        # Flower's task history survives its restarts, next to the stack's other state.
        "--persistent=True",
        f"--db={settings.state_dir / 'flower.db'}",
        "--state_save_interval=10000",
        f"--tasks_columns={FLOWER_TASK_COLUMNS}",
        # Worker processes come and go as a host is scaled; old ones leave the list.
        "--purge_offline_workers=600",
    ]
    if settings.flower_basic_auth:
        argv.append(f"--basic_auth={settings.flower_basic_auth}")
    elif not is_local_address(address):
        raise click.ClickException(
            "refusing to serve Flower beyond localhost without RESIZEFLOW_FLOWER_BASIC_AUTH"
        )
    return argv


@main.command()
@click.option("--port", type=int, help="Port to serve on (RESIZEFLOW_FLOWER_PORT).")
@click.option("--address", default="127.0.0.1", show_default=True)
def flower(port: int | None, address: str) -> None:
    """Run Flower on the broker, with basic auth from RESIZEFLOW_FLOWER_BASIC_AUTH.

    Its state persists in the state dir; basic auth is required beyond localhost.
    """
    from resizeflow.celery_app import make_app

    settings = load_settings()
    argv = flower_argv(settings, port or settings.flower_port, address)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    make_app(settings).start(argv=argv)
