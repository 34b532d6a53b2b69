"""The worker's watchdog: it pings its own worker over the broker, and a failed
ping must never break the worker's own connections.

kombu pools broker connections per URL for the whole process, so the
watchdog and the worker it watches share one pool. A watchdog that closed
that pool after a failed ping (during a broker restart) left the worker
unable to publish its next chain links or to answer control commands.
"""

from __future__ import annotations

import datetime as dt
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.db import services
from resizeflow.db.models import StepJournal, utcnow
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import start_redis
from resizeflow.devstack.supervisor import Supervisor
from resizeflow.restart import EXIT_RESTART
from resizeflow.states import JournalStatus
from resizeflow.steps.context import HostRuntime
from resizeflow.worker import Heartbeat
from tests.support.stack import REDIS_URL, Stack, require


def _watchdog(settings: Settings, database: Database) -> Heartbeat:
    # The watchdog needs only the settings and the database of a runtime.
    runtime = HostRuntime(settings=settings, db=database, virt=None, notifier=None)  # type: ignore[arg-type]
    return Heartbeat(runtime, make_app(settings))


def test_the_watchdog_hears_its_running_worker(stack: Stack) -> None:
    for host in stack.hosts:
        assert _watchdog(stack.settings.with_host(host), stack.db).consumer_alive()


def test_no_answer_from_a_host_without_a_worker(stack: Stack) -> None:
    assert not _watchdog(stack.settings.with_host("nowhere"), stack.db).consumer_alive()


def test_a_failed_ping_leaves_the_shared_pool_usable(tmp_path: Path) -> None:
    require(REDIS_URL, 6379, "Redis")  # for its redis-server binary's sake
    sup = Supervisor(state_dir=tmp_path, env={})
    try:
        url = start_redis(sup)
        settings = Settings.from_env(
            {"RESIZEFLOW_STATE_DIR": str(tmp_path), "RESIZEFLOW_BROKER_URL": url}
        ).with_host("h1")
        worker_app = make_app(settings)

        def publish() -> None:
            # The path a worker takes to send the next step of a chain.
            with worker_app.producer_or_acquire() as producer:
                producer.publish({"probe": 1}, routing_key="probe", retry=True)

        publish()
        # The broker dies: the watchdog's ping fails.
        redis_proc = sup.procs.pop("redis")
        redis_proc.send_signal(signal.SIGKILL)
        redis_proc.wait()
        watchdog = _watchdog(settings, Database(settings.db_url))
        assert not watchdog.consumer_alive()
        # The broker is back: the worker's pooled connections reconnect.
        (tmp_path / "redis.sock").unlink(missing_ok=True)
        start_redis(sup)
        try:
            publish()
        except RuntimeError as exc:  # pragma: no cover - the regression
            pytest.fail(f"the worker cannot publish after a failed watchdog ping: {exc}")
    finally:
        sup.stop_all()


def test_a_restart_leaves_the_service_up_and_a_shutdown_does_not(
    database: Database, tmp_path: Path
) -> None:
    """A worker exiting to be restarted stays up; one stopped for good is down at once."""
    settings = Settings.from_env({"RESIZEFLOW_STATE_DIR": str(tmp_path)}).with_host("h1")
    runtime = HostRuntime(settings=settings, db=database, virt=None, notifier=None)  # type: ignore[arg-type]

    def up() -> bool:
        with database.snapshot() as s:
            svc = services.get(s, "h1")
            return svc is not None and services.is_up(svc, settings.service_down_time)

    restarting = Heartbeat(runtime)
    restarting.beat()
    assert up()
    restarting.stop(for_good=False)
    assert up(), "the supervisor brings it back before the host counts as down"

    stopped = Heartbeat(runtime)
    stopped.beat()
    stopped.stop()
    assert not up()


def test_a_host_is_down_only_when_its_last_worker_process_stops(
    database: Database, tmp_path: Path
) -> None:
    """Heartbeats per process, the service per host: Nova's rule over all of them."""
    settings = Settings.from_env({"RESIZEFLOW_STATE_DIR": str(tmp_path)}).with_host("h1")
    machine = socket.gethostname()
    # Stand-ins for two worker processes of h1 on this machine (qemu:///, say).
    procs = [subprocess.Popen(["sleep", "120"]) for _ in range(2)]

    def join(pid: int, exclusive: bool = False) -> str:
        with database.transaction() as s:
            return services.join(
                s, "h1", "compute.h1", machine=machine, pid=pid, down_time=60, exclusive=exclusive
            ).node

    def up() -> bool:
        with database.snapshot() as s:
            svc = services.get(s, "h1")
            return svc is not None and services.is_up(svc, settings.service_down_time)

    try:
        nodes = [join(p.pid) for p in procs]
        assert nodes == [f"h1-1@{machine}", f"h1-2@{machine}"]
        beats = [
            Heartbeat(
                HostRuntime(
                    settings=settings,
                    db=database,
                    virt=None,  # type: ignore[arg-type]
                    notifier=None,  # type: ignore[arg-type]
                    incarnation=f"{node}/{proc.pid}",
                )
            )
            for node, proc in zip(nodes, procs, strict=True)
        ]
        for beat in beats:
            beat.beat()
        assert up()
        with pytest.raises(services.DuplicateWorker, match="h1 already has a worker"):
            join(4242, exclusive=True)

        beats[0].stop()  # one process shuts down for good; the other still serves h1
        assert up()
        # A process killed with SIGKILL frees its slot at once on its machine.
        procs[1].kill()
        procs[1].wait()
        assert join(procs[0].pid) == f"h1-1@{machine}"
        assert join(procs[0].pid) == f"h1-2@{machine}"
        beats[1].stop()  # the last process of h1 that says goodbye
        assert up(), "the two joined stand-ins for h1 are alive"
        procs[0].kill()
        procs[0].wait()
        Heartbeat(
            HostRuntime(settings=settings, db=database, virt=None, notifier=None)  # type: ignore[arg-type]
        ).stop()
        assert not up()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def _join(database: Database, machine: str, pid: int) -> services.Joined:
    with database.transaction() as s:
        return services.join(
            s, "h1", "compute.h1", machine=machine, pid=pid, down_time=60, exclusive=False
        )


def test_a_killed_worker_not_yet_reaped_frees_its_slot(database: Database) -> None:
    """Killed but not reaped by whatever started it, a worker is a zombie whose pid
    still answers signal 0: its restart takes its slot, and is alone on its host."""
    machine = socket.gethostname()
    proc, successor = (subprocess.Popen(["sleep", "120"]) for _ in range(2))
    try:
        assert _join(database, machine, proc.pid) == services.Joined(f"h1-1@{machine}", True)
        proc.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed process never became a zombie"
            time.sleep(0.05)
        # Not reaped yet: its pid is still there.
        assert _join(database, machine, successor.pid) == services.Joined(f"h1-1@{machine}", True)
        assert _join(database, machine, successor.pid) == services.Joined(f"h1-2@{machine}", False)
    finally:
        for p in (proc, successor):
            p.kill()
            p.wait()


def test_a_worker_elsewhere_that_let_its_step_lease_lapse_frees_its_slot(
    database: Database,
) -> None:
    """A process on another machine cannot be checked by pid; one that holds a
    running step and has not renewed its lease is dead all the same."""
    here, there = socket.gethostname(), "another-machine"
    live = subprocess.Popen(["sleep", "120"])
    old = _join(database, there, 101)
    assert old == services.Joined(f"h1-1@{there}", True)
    with database.transaction() as s:
        row = StepJournal(
            instance_uuid="00000000-0000-0000-0000-000000000001",
            request_id="req-1",
            flow="confirm",
            step="resizeflow.confirm.confirm_migration",
            position=0,
            host="h1",
            status=JournalStatus.RUNNING,
            worker=f"{old.node}/101",
            lease_expires_at=utcnow() + dt.timedelta(seconds=30),
        )
        s.add(row)
    try:
        # Its lease is live: it is alive, and the next process takes slot 2.
        assert _join(database, here, live.pid) == services.Joined(f"h1-2@{here}", False)
        with database.transaction() as s:
            held = s.get(StepJournal, row.id)
            assert held is not None
            held.lease_expires_at = utcnow() - dt.timedelta(seconds=1)
        # Lapsed: slot 1 is free again, and slot 2 is still alive (no step held).
        assert _join(database, here, live.pid) == services.Joined(f"h1-1@{here}", False)
    finally:
        live.kill()
        live.wait()


# A process whose warm shutdown never ends (SIGTERM ignored), asking to restart.
_HUNG = """
import signal, sys, time
from resizeflow.restart import Restart
signal.signal(signal.SIGTERM, lambda *_: None)
busy_until = time.monotonic() + float(sys.argv[1])
Restart().request("test", grace=float(sys.argv[2]), busy=lambda: time.monotonic() < busy_until)
time.sleep(300)
"""


def _hung_restart(busy_for: float, grace: float) -> tuple[int, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", _HUNG, str(busy_for), str(grace)], timeout=120, check=False
    )
    return proc.returncode, time.monotonic() - started


def test_a_stuck_shutdown_leaves_once_nothing_runs() -> None:
    code, took = _hung_restart(busy_for=4, grace=100)
    assert code == EXIT_RESTART
    assert 4 <= took < 60, "left while a task ran, or waited out the grace while idle"


def test_a_stuck_shutdown_leaves_after_the_grace_even_if_busy() -> None:
    code, took = _hung_restart(busy_for=1000, grace=4)
    assert code == EXIT_RESTART
    assert 4 <= took < 60
