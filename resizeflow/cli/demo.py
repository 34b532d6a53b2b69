"""``resizeflow demo``: the whole stack on one machine, driving real workflows.

It starts a private Redis, one worker per simulated host, beat and the API,
all against a SQLite file and the libvirt test driver. It boots servers,
resizes them, confirms some and reverts others (one of them stopped), shows
progress live, then prints a timeline of every workflow.
"""

from __future__ import annotations

import shlex
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import select, update

from resizeflow import flows, logs
from resizeflow.cli import load_settings, main
from resizeflow.compute.policy import RequestContext
from resizeflow.db import journal
from resizeflow.db.models import Instance, Migration, Port, StepJournal
from resizeflow.db.session import Database
from resizeflow.devstack import qemu_demo
from resizeflow.devstack.stack import TEST_DRIVER_ENV, LocalStack, build
from resizeflow.states import JournalStatus, MigrationStatus, VmState, api_status

PROJECT = "demo"
TERMINAL = {MigrationStatus.CONFIRMED, MigrationStatus.REVERTED, MigrationStatus.ERROR}


@dataclass
class Server:
    uuid: str
    name: str
    ending: str  # "confirm" or "revert"
    stopped: bool
    migration_id: int | None = None


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
                        StepJournal.status.in_([JournalStatus.RUNNING, JournalStatus.RETRYING]),
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
                    r.flow, flows.step(r.step).short, r.host, r.status, str(r.attempts), at, took
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


# The demo's hosts hold every server it boots; its logs are JSON lines to grep.
DEMO_ENV = {
    **TEST_DRIVER_ENV,
    "RESIZEFLOW_NODE_VCPUS": "32",
    "RESIZEFLOW_NODE_MEMORY_MB": "131072",
    "RESIZEFLOW_NODE_LOCAL_GB": "4000",
    "RESIZEFLOW_LOG_FORMAT": "json",
}


def _start_stack(
    stack: LocalStack,
    hosts: list[str],
    flower: bool,
    host_env: dict[str, dict[str, str]] | None = None,
) -> None:
    stack.spawn_storage()  # the block-storage host, beside the compute hosts
    stack.start_workers(hosts, env=host_env)
    stack.wait_storage()
    stack.start_beat()
    if _api_available():
        stack.start_api()
    if flower:
        # Before any work is sent: Flower shows only the tasks whose events it received.
        stack.start_flower()


# What the demo suggests running once its env file is sourced. The file speaks as
# the demo's user; a workflow's step journal is for admins, as Nova's migrations are.
NEXT_COMMANDS = ("resizeflow server list", "resizeflow workflow show 1 --token admin:admin")


def write_env_file(stack: LocalStack, keep_running: bool) -> Path:
    """A file to ``source`` that points the CLI at the demo's stack, as its user."""
    settings = stack.settings
    lines = [
        "# The resizeflow demo's stack: `source` this file, then run the resizeflow CLI.",
        f"export RESIZEFLOW_STATE_DIR={shlex.quote(str(settings.state_dir))}",
        f"export RESIZEFLOW_BROKER_URL={shlex.quote(settings.broker_url)}",
        f"export RESIZEFLOW_LIBVIRT_URI={shlex.quote(settings.libvirt_uri)}",
        f"export RESIZEFLOW_STORAGE_PORT={settings.storage_port}",
        "# The demo's servers belong to project demo; admin:admin sees them with --all-projects,",
        "# and workflows and migrations are admin's: --token admin:admin.",
        f"export RESIZEFLOW_TOKEN={PROJECT}:{PROJECT}",
    ]
    if keep_running and stack.api_url:
        lines.append(f"export RESIZEFLOW_URL={stack.api_url}/v2.1")
    path = settings.state_dir / "demo.env"
    path.write_text("\n".join(lines) + "\n")
    return path


class Stopped(Exception):
    """SIGTERM or SIGINT: the operator asked the demo to stop."""


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


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
    """Run the demo; True when every workflow finished or the operator stopped it."""
    base = load_settings()
    state_dir = (base.state_dir / "demo").resolve()
    shutil.rmtree(state_dir, ignore_errors=True)
    # NOTE: the stack's processes run in sessions of their own, so a signal to
    # the demo alone would leave them running; both signals end in the
    # finally below, which stops every one of them.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    stack: LocalStack | None = None
    names = [f"compute-{i + 1}" for i in range(hosts)]
    host_env: dict[str, dict[str, str]] = {}
    try:
        # The console is for the progress display; this process logs to a file.
        (state_dir / "logs").mkdir(parents=True)
        logs.setup("INFO", "json", path=state_dir / "logs" / "demo.log")
        env = dict(DEMO_ENV)
        if hypervisor == "qemu":
            with console.status("starting libvirtd and building the test guest"):
                env.update(qemu_demo.prepare(state_dir))
                host_env = qemu_demo.host_env(names)
        with console.status("starting Redis, workers, beat and the API"):
            stack = build(state_dir, env=env)
            _start_stack(stack, names, flower, host_env)
        if hypervisor == "qemu":
            if not stack.api_url:
                raise click.ClickException("the qemu demo uploads its guest through the API")
            with console.status("uploading the test guest through the image API"):
                qemu_demo.load_guest(stack.api_url)
        ok = _drive(console, stack, servers, timeout, hypervisor)
        env_file = write_env_file(stack, keep_running)
        console.print(f"\n[bold]Where to look next[/bold] (state in {state_dir})")
        if stack.api_url:
            console.print(f"  API      {stack.api_url}/v2.1  (token {PROJECT}:{PROJECT})")
        if stack.flower_url:
            console.print(f"  Flower   {stack.flower_url}")
        console.print(f"  Logs     {stack.sup.log_dir}/  (JSON lines; grep a migration_id)")
        console.print(f"  CLI      source {env_file}", soft_wrap=True)
        console.print(f"           {'; '.join(NEXT_COMMANDS)}")
        if keep_running:
            console.print("\nThe stack keeps running; press Ctrl-C to stop it.")
            while True:
                stack.sup.check_alive()
                time.sleep(1)
        return ok
    except Stopped as why:
        console.print(f"\n{why}: stopping")
        return True
    except RuntimeError as exc:  # a process of the stack failed to start or died
        raise click.ClickException(str(exc)) from None
    finally:
        # A second Ctrl-C must not cut the stop short and leave processes behind.
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        if stack is not None:
            with console.status("stopping the stack"):
                stack.close()
                if hypervisor == "qemu":
                    # NOTE: the guests outlive the workers (QEMU runs under libvirtd).
                    final = stack.settings
                    qemu_demo.cleanup(final, Database(final.db_url), host_env)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _drive(
    console: Console, stack: LocalStack, count: int, timeout: float, hypervisor: str = "test"
) -> bool:
    api, database = stack.api, stack.db
    small, big = qemu_demo.create_flavors(database) if hypervisor == "qemu" else ("1", "2")
    watch = qemu_demo.GuestWatch(stack.settings, database) if hypervisor == "qemu" else None

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
            # Its ports are the project's too, so `openstack port list --server` finds them.
            s.execute(update(Port).where(Port.instance_uuid == srv.uuid).values(project_id=PROJECT))
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
