"""The operations guide's "Running it", followed as written, with nothing else set.

The commands and the settings come from the guide itself: the ``bash`` block
of the "Running it" section of ``docs/operations.md``. The test exports only what that block exports
(the database and the broker, pointed at this run's own: a scratch PostgreSQL
database and a private redis-server), runs ``db upgrade``, one worker per
compute host and beat from the directory a user would be in, and then
resizes a server with the CLI, confirms, resizes again and reverts. Every
other setting keeps its default, libvirt's ``test:///`` driver and the disk
transport among them: with defaults that do not agree, the resize ends in
ERROR.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.db.models import Instance, Migration
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import start_redis
from resizeflow.devstack.stack import clean_environ
from resizeflow.devstack.supervisor import Supervisor
from resizeflow.states import MigrationStatus, VmState
from tests.support.invariants import assert_allocation_invariant
from tests.support.stack import PG_ADMIN_URL, create_pg_database, drop_pg_database, require

pytestmark = pytest.mark.services

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
HOSTS = ("compute-1", "compute-2")


def running_it() -> tuple[dict[str, str], list[str]]:
    """The exports and the commands of the operations guide's "Running it" block."""
    section = OPERATIONS.read_text().split("\n## Running it\n", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    exports: dict[str, str] = {}
    commands: list[str] = []
    for raw in block.splitlines():
        line = re.sub(r"\s+#.*$", "", raw).strip()
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            exports[name] = value
        elif line:
            commands.append(line)
    return exports, commands


def argv(command: str) -> list[str]:
    """A command line of the guide, run with this interpreter's resizeflow."""
    words = shlex.split(command)
    assert words[0] == "resizeflow", command
    return [sys.executable, "-m", "resizeflow", *words[1:]]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Supervisor, dict[str, str]]]:
    """A directory to run in, the guide's exports (this run's services), a supervisor."""
    require(PG_ADMIN_URL, 5432, "PostgreSQL")
    exports, _ = running_it()
    # The guide exports these two and nothing else; a change there shows here.
    assert set(exports) == {"RESIZEFLOW_DATABASE_URL", "RESIZEFLOW_BROKER_URL"}, exports
    cwd = tmp_path / "site"
    cwd.mkdir()
    sup = Supervisor(state_dir=tmp_path / "run", env=clean_environ(), cwd=cwd)
    database_url = ""
    try:
        # Each run's own broker and database: other runs on this machine use
        # the same queue names (compute.compute-1) and the default flavors.
        broker_url = start_redis(sup)
        database_url = create_pg_database()
        sup.env.update(
            {"RESIZEFLOW_DATABASE_URL": database_url, "RESIZEFLOW_BROKER_URL": broker_url}
        )
        yield sup, sup.env
    finally:
        sup.stop_all()
        if database_url:
            drop_pg_database(database_url)


def run(sup: Supervisor, command: str, timeout: float = 240.0) -> str:
    done = subprocess.run(
        argv(command),
        cwd=sup.cwd,
        env=sup.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        logs = "\n".join(
            f"--- {name}:\n{sup.log_path(name).read_text(errors='replace')[-3000:]}"
            for name in sup.procs
            if name != "redis"
        )
        pytest.fail(f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}\n{logs}")
    return done.stdout


def test_running_it_as_the_guide_says_resizes_confirms_and_reverts(
    site: tuple[Supervisor, dict[str, str]],
) -> None:
    sup, env = site
    _, commands = running_it()
    upgrade = "resizeflow db upgrade"
    worker = "resizeflow worker --host compute-1 --register"
    beat = "resizeflow beat"
    assert {upgrade, worker, beat} <= set(commands), commands

    run(sup, upgrade)
    for host in HOSTS:  # "each compute host"
        sup.spawn(f"worker-{host}", argv(worker.replace("compute-1", host)))
    sup.spawn("beat", argv(beat))
    settings = Settings.from_env(env)
    app = make_app(settings)
    nodes = [f"{host}-1@{socket.gethostname()}" for host in HOSTS]
    sup.wait_until(
        "both workers to answer a ping",
        lambda: len(app.control.ping(destination=nodes, timeout=0.5) or []) == len(nodes),
        120.0,
        watch=tuple(f"worker-{h}" for h in HOSTS),
    )

    # The CLI's --wait exits non-zero when a workflow ends in error.
    run(sup, "resizeflow server create vm-1 --flavor m1.tiny --wait")
    run(sup, "resizeflow server resize vm-1 --flavor m1.small --wait")
    run(sup, "resizeflow server confirm-resize vm-1 --wait")
    run(sup, "resizeflow server resize vm-1 --flavor m1.medium --wait")
    run(sup, "resizeflow server revert-resize vm-1 --wait")

    database = Database(settings.db_url)
    try:
        with database.snapshot() as s:
            inst = s.scalars(select(Instance).where(Instance.display_name == "vm-1")).one()
            migs = s.scalars(select(Migration).order_by(Migration.id)).all()
            assert (inst.vm_state, inst.task_state, inst.flavor["name"]) == (
                VmState.ACTIVE,
                None,
                "m1.small",
            )
            assert [m.status for m in migs] == [MigrationStatus.CONFIRMED, MigrationStatus.REVERTED]
            # Each resize crossed to the other host; the revert came back.
            first, second = migs
            assert {first.source_compute, first.dest_compute} == set(HOSTS)
            assert second.source_compute == first.dest_compute == inst.host
            assert second.dest_compute == first.source_compute
        assert_allocation_invariant(database)
    finally:
        database.dispose()
    # The default state dir is ./var of the directory the commands ran in,
    # with each simulated host's instances dir under it.
    assert sup.cwd is not None and inst.host is not None
    state = sup.cwd / "var"
    assert (state / inst.host / "instances" / inst.uuid).is_dir()
    other = next(h for h in HOSTS if h != inst.host)
    assert not (state / other / "instances" / inst.uuid).exists()
