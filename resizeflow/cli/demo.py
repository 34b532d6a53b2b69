"""``resizeflow demo``: the whole stack on one machine, driving real workflows.

It starts a private Redis, one worker per simulated host, beat and the API,
all against a SQLite file and the libvirt test driver. It boots servers,
resizes them, confirms some and reverts others (one of them stopped), shows
progress live, then prints a timeline of every workflow.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import select

from resizeflow import logs
from resizeflow.celery_app import make_app
from resizeflow.cli import load_settings, main
from resizeflow.cli.supervisor import Supervisor, start_redis
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db import journal
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import Instance, Migration, StepJournal
from resizeflow.db.session import Database
from resizeflow.hypervisor import demo as qemu_demo
from resizeflow.states import MigrationStatus, VmState, api_status

PROJECT = "demo"
TERMINAL = {MigrationStatus.CONFIRMED, MigrationStatus.REVERTED, MigrationStatus.ERROR}


@dataclass
class Server:
    uuid: str
    name: str
    ending: str  # "confirm" or "revert"
    stopped: bool
    migration_id: int | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_available() -> bool:
    from resizeflow.cli import main as group

    return "api" in group.commands


def _progress(database: Database, servers: list[Server]) -> Table:
    table = Table(title="resizeflow demo", expand=False)
    for col in ("server", "status", "host", "flavor", "migration", "current step"):
        table.add_column(col)
    with database.snapshot() as s:
        for srv in servers:
            inst = s.get(Instance, srv.uuid)
            assert inst is not None
            mig = s.get(Migration, srv.migration_id) if srv.migration_id else None
            step = ""
            if mig is not None:
                active = s.scalars(
                    select(StepJournal)
                    .where(
                        StepJournal.migration_id == mig.id,
                        StepJournal.status.in_([journal.RUNNING, journal.RETRYING]),
                    )
                    .limit(1)
                ).first()
                step = f"{active.step.split('.', 1)[1]} @ {active.host}" if active else ""
            table.add_row(
                srv.name,
                api_status(inst.vm_state, inst.task_state),
                inst.host or "",
                inst.flavor["name"],
                mig.status.value if mig else "",
                step,
            )
    return table


def _timeline(database: Database, servers: list[Server]) -> Group:
    tables = []
    with database.snapshot() as s:
        for srv in servers:
            if srv.migration_id is None:
                continue
            rows = journal.rows(s, srv.migration_id)
            mig = s.get(Migration, srv.migration_id)
            assert mig is not None
            start = min((r.started_at for r in rows if r.started_at), default=None)
            table = Table(
                title=f"{srv.name}: migration {mig.id} {mig.source_compute} -> "
                f"{mig.dest_compute}, {mig.status.value}",
                title_justify="left",
            )
            for col in ("flow", "step", "host", "status", "tries", "at (ms)", "took (ms)"):
                table.add_column(col)
            for r in sorted(rows, key=lambda r: (r.started_at or r.enqueued_at, r.position)):
                at = took = ""
                if r.started_at and start:
                    at = f"{(r.started_at - start).total_seconds() * 1000:.0f}"
                if r.started_at and r.finished_at:
                    took = f"{(r.finished_at - r.started_at).total_seconds() * 1000:.0f}"
                table.add_row(
                    r.flow, r.step.rsplit(".", 1)[1], r.host, r.status, str(r.attempts), at, took
                )
            tables.append(table)
    return Group(*tables)


def _wait(
    live: Live,
    database: Database,
    servers: list[Server],
    done: Callable[[], bool],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        live.update(_progress(database, servers))
        if time.monotonic() > deadline:
            raise click.ClickException(f"the demo's workflows did not finish in {timeout:.0f}s")
        time.sleep(0.2)
    live.update(_progress(database, servers))


def _all(database: Database, servers: list[Server], test: Callable[[Instance], bool]) -> bool:
    with database.snapshot() as s:
        return all(test(inst) for srv in servers if (inst := s.get(Instance, srv.uuid)))


def _migrations_end(database: Database, servers: list[Server], ends: set[MigrationStatus]) -> bool:
    with database.snapshot() as s:
        return all(
            (mig := s.get(Migration, srv.migration_id)) is not None and mig.status in ends
            for srv in servers
        )


def _start_stack(sup: Supervisor, settings: Settings, hosts: list[str], api_port: int) -> None:
    for host in hosts:
        sup.resizeflow(f"worker-{host}", "worker", "--host", host)
    sup.resizeflow("beat", "beat")
    if _api_available():
        sup.resizeflow("api", "api", "--bind", "127.0.0.1", "--port", str(api_port))
    app = make_app(settings)
    nodes = [f"{h}@{socket.gethostname()}" for h in hosts]
    sup.wait_until(
        "the workers",
        lambda: len(app.control.ping(destination=nodes, timeout=0.5) or []) == len(nodes),
    )


def run_demo(
    console: Console,
    *,
    hosts: int,
    servers: int,
    keep_running: bool,
    flower: bool,
    timeout: float,
    hypervisor: str = "test",
) -> bool:
    base = load_settings()
    state_dir = (base.state_dir / "demo").resolve()
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    sup = Supervisor(state_dir=state_dir, env=dict(os.environ))
    try:
        broker = start_redis(sup)
        sup.env.update(
            {
                "RESIZEFLOW_STATE_DIR": str(state_dir),
                "RESIZEFLOW_BROKER_URL": broker,
                "RESIZEFLOW_LIBVIRT_URI": "test:///default",
                "RESIZEFLOW_NODE_VCPUS": "32",
                "RESIZEFLOW_NODE_MEMORY_MB": "131072",
                "RESIZEFLOW_NODE_LOCAL_GB": "4000",
                "RESIZEFLOW_LOG_FORMAT": "json",
            }
        )
        sup.env.pop("RESIZEFLOW_DATABASE_URL", None)
        if hypervisor == "qemu":
            with console.status("starting libvirtd and building the test guest"):
                sup.env.update(qemu_demo.prepare(state_dir))
        # The console is for the progress display; this process logs to a file too.
        sup.log_dir.mkdir(parents=True, exist_ok=True)
        logs.setup("INFO", "json", path=sup.log_dir / "demo.log")
        settings = Settings.from_env(sup.env)
        database = Database(settings.db_url)
        upgrade(database)
        names = [f"compute-{i + 1}" for i in range(hosts)]
        api_port = _free_port()
        flower_port = _free_port()
        with console.status("starting Redis, workers, beat and the API"):
            _start_stack(sup, settings, names, api_port)
            if flower:
                sup.resizeflow("flower", "flower", "--port", str(flower_port))
        ok = _drive(console, settings, database, servers, timeout, hypervisor)
        console.print(f"\n[bold]Where to look next[/bold] (state in {state_dir})")
        if _api_available():
            console.print(f"  API      http://127.0.0.1:{api_port}/v2.1  (token admin:admin)")
        if flower:
            console.print(f"  Flower   http://127.0.0.1:{flower_port}")
        console.print(f"  Logs     {sup.log_dir}/  (JSON lines; grep a migration_id)")
        console.print(
            f"  CLI      export RESIZEFLOW_STATE_DIR={state_dir} RESIZEFLOW_BROKER_URL={broker}\n"
            "           resizeflow server list; resizeflow workflow show 1"
        )
        if keep_running:
            console.print("\nThe stack keeps running; press Ctrl-C to stop it.")
            while True:
                sup.check_alive()
                time.sleep(1)
        return ok
    except KeyboardInterrupt:
        console.print("\nstopping")
        return False
    finally:
        with console.status("stopping the stack"):
            sup.stop_all()
            if hypervisor == "qemu" and (state_dir / "resizeflow.sqlite").exists():
                final = Settings.from_env(sup.env)
                hosts_ = [f"compute-{i + 1}" for i in range(hosts)]
                qemu_demo.cleanup(final, Database(final.db_url), hosts_)


def _drive(
    console: Console,
    settings: Settings,
    database: Database,
    count: int,
    timeout: float,
    hypervisor: str = "test",
) -> bool:
    api = ComputeAPI(settings, database, make_app(settings))
    small, big = qemu_demo.create_flavors(database) if hypervisor == "qemu" else ("1", "2")
    watch = qemu_demo.GuestWatch(settings, database) if hypervisor == "qemu" else None

    def user() -> RequestContext:  # one request id per call, as per HTTP request
        return RequestContext(user_id="demo", project_id=PROJECT)

    fleet = [
        Server(
            uuid="",
            name=f"vm-{i + 1}",
            ending="confirm" if i % 2 == 0 else "revert",
            stopped=i == 1,
        )
        for i in range(count)
    ]
    for srv in fleet:
        srv.uuid = api.create(RequestContext.admin(), name=srv.name, flavor_ref=small)
        with database.transaction() as s:
            inst = s.get(Instance, srv.uuid)
            assert inst is not None
            inst.project_id, inst.user_id = PROJECT, "demo"
    with Live(_progress(database, fleet), console=console, refresh_per_second=8) as live:
        _wait(
            live, database, fleet, lambda: _all(database, fleet, _settled(VmState.ACTIVE)), timeout
        )
        if watch is not None:
            watch.record_boot([srv.uuid for srv in fleet])
        for srv in fleet:
            if srv.stopped:
                api.stop(user(), srv.uuid)
        _wait(live, database, fleet, lambda: _all(database, fleet, _idle), timeout)
        for srv in fleet:
            srv.migration_id = api.resize(user(), srv.uuid, big)
        _wait(
            live,
            database,
            fleet,
            lambda: (
                _migrations_end(database, fleet, {MigrationStatus.FINISHED, *TERMINAL})
                and _all(database, fleet, _idle)
            ),
            timeout,
        )
        for srv in fleet:
            if srv.ending == "confirm":
                api.confirm_resize(user(), srv.uuid)
            else:
                api.revert_resize(user(), srv.uuid)
        _wait(
            live,
            database,
            fleet,
            lambda: _migrations_end(database, fleet, TERMINAL) and _all(database, fleet, _idle),
            timeout,
        )
    console.print()
    console.print(_timeline(database, fleet))
    if watch is not None:
        watch.record_end([s.uuid for s in fleet], {s.uuid for s in fleet if not s.stopped})
        console.print(watch.table({s.uuid: s.name for s in fleet}))
    with database.snapshot() as s:
        failed = [
            srv.name
            for srv in fleet
            if (m := s.get(Migration, srv.migration_id)) is None
            or m.status == MigrationStatus.ERROR
        ]
    if failed:
        console.print(f"[red]workflows failed for {', '.join(failed)}[/red]")
        return False
    console.print(
        f"[green]all {len(fleet)} workflows finished:[/green] "
        f"{sum(s.ending == 'confirm' for s in fleet)} confirmed, "
        f"{sum(s.ending == 'revert' for s in fleet)} reverted"
    )
    return True


def _settled(vm_state: VmState) -> Callable[[Instance], bool]:
    return lambda inst: inst.vm_state == vm_state and inst.task_state is None


def _idle(inst: Instance) -> bool:
    return inst.task_state is None


@main.command()
@click.option("--hosts", default=2, show_default=True, help="Simulated compute hosts.")
@click.option("--servers", default=6, show_default=True, help="Servers to boot and resize.")
@click.option("--keep-running", is_flag=True, help="Leave the stack up for exploring.")
@click.option("--flower", is_flag=True, help="Also start Flower.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds before giving up.")
@click.option(
    "--hypervisor",
    type=click.Choice(["test", "qemu"]),
    default="test",
    show_default=True,
    help="libvirt's test driver, or real QEMU guests on qemu:///system (root).",
)
def demo(
    hosts: int, servers: int, keep_running: bool, flower: bool, timeout: float, hypervisor: str
) -> None:
    """Run the whole stack locally and drive resizes, confirms and reverts through it."""
    if hosts < 1 or servers < 2:
        raise click.BadParameter("need at least 1 host and 2 servers")
    console = Console()
    ok = run_demo(
        console,
        hosts=hosts,
        servers=servers,
        keep_running=keep_running,
        flower=flower,
        timeout=timeout,
        hypervisor=hypervisor,
    )
    if not ok:
        raise SystemExit(1)
