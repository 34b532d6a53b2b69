"""A real resizeflow stack for tests: a database, a Redis broker, and worker processes.

Each stack gets its own PostgreSQL database (or SQLite file), its own Redis key
prefix and its own state dir, so concurrent runs never see each other.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import redis
from celery import Celery
from kombu import Connection
from sqlalchemy import select

from resizeflow.celery_app import make_app
from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db import journal
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import Instance, Migration, StepJournal
from resizeflow.db.scratch import create_database, drop_database
from resizeflow.db.session import Database
from resizeflow.states import JournalStatus, MigrationStatus, VmState

REDIS_URL = os.environ.get("RESIZEFLOW_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("RESIZEFLOW_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672")
PG_ADMIN_URL = os.environ.get(
    "RESIZEFLOW_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
T = TypeVar("T")


def service_up(url: str, default_port: int) -> bool:
    rest = url.split("@")[-1].split("://")[-1]
    hostport = rest.split("/")[0]
    host, _, port = hostport.partition(":")
    try:
        with socket.create_connection((host, int(port or default_port)), timeout=1):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def create_vhost() -> str:
    """A RabbitMQ vhost of its own, so a run sees only its own queues."""
    name = f"rf-test-{uuid.uuid4().hex[:10]}"
    user = RABBITMQ_URL.split("://", 1)[1].split(":", 1)[0]
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, user, ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    return name


def delete_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


def create_pg_database() -> str:
    return create_database(PG_ADMIN_URL, "rf_test")


def drop_pg_database(url: str) -> None:
    drop_database(PG_ADMIN_URL, url)


@dataclass
class Stack:
    backend: str  # the database: sqlite or postgresql
    state_dir: Path
    env: dict[str, str]
    settings: Settings
    db: Database
    app: Celery
    api: ComputeAPI
    hosts: tuple[str, ...]
    broker: str = "redis"  # or rabbitmq
    vhost: str = ""
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    api_proc: subprocess.Popen[bytes] | None = None
    api_url: str = ""

    # -- processes ----------------------------------------------------------
    def api_endpoint(self) -> str:
        """The ``/v2.1`` endpoint of this stack's ``resizeflow api``, started on first use."""
        if self.api_proc is None or self.api_proc.poll() is not None:
            self.start_api()
        return self.api_url + "/v2.1"

    def start_api(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = open(self.state_dir / "api.log", "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "resizeflow", "api", "--bind", "127.0.0.1"]
        self.api_proc = subprocess.Popen(
            [*cmd, "--port", str(port)], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.api_url = f"http://127.0.0.1:{port}"
        proc = self.api_proc
        wait_for(
            lambda: proc.poll() is None and service_up(self.api_url, port),
            timeout=60,
            what="the API to listen",
        )

    def stop_api(self) -> None:
        if self.api_proc is not None:
            self.api_proc.send_signal(signal.SIGTERM)
            try:
                self.api_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.api_proc.kill()
                self.api_proc.wait()
            self.api_proc = None

    def start_worker(self, host: str) -> None:
        log = open(self.state_dir / f"worker-{host}.log", "ab")  # noqa: SIM115
        self.workers[host] = subprocess.Popen(
            [sys.executable, "-m", "resizeflow", "worker", "--host", host, "--loglevel", "INFO"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        node = f"{host}@{socket.gethostname()}"
        wait_for(
            lambda: (
                self.workers[host].poll() is None
                and self.app.control.ping(destination=[node], timeout=0.5)
            ),
            timeout=60,
            what=f"worker {host} to answer a ping",
        )

    def start_beat(self, **env: str) -> subprocess.Popen[bytes]:
        """Start ``resizeflow beat``; ``env`` adds RESIZEFLOW_* settings for it alone."""
        log = open(self.state_dir / "beat.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "resizeflow", "beat"],
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        node = f"beat@{socket.gethostname()}"
        wait_for(
            lambda: proc.poll() is None and self.app.control.ping(destination=[node], timeout=0.5),
            timeout=60,
            what="beat to answer a ping",
        )
        return proc

    def kill_worker(self, host: str) -> None:
        """SIGKILL: no warm shutdown, no goodbye heartbeat, unacked messages stay unacked."""
        proc = self.workers.pop(host)
        proc.kill()
        proc.wait()

    def stop_worker(self, host: str) -> None:
        proc = self.workers.pop(host)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def worker_log(self, host: str) -> str:
        return (self.state_dir / f"worker-{host}.log").read_text(errors="replace")

    # -- requests -----------------------------------------------------------
    def ctx(self, project: str, user: str = "alice", admin: bool = False) -> RequestContext:
        roles = frozenset({"admin", "member"} if admin else {"member"})
        return RequestContext(user_id=user, project_id=project, roles=roles)

    def admin(self) -> RequestContext:
        return RequestContext.admin()

    def set_failpoints(self, table: dict[str, list[dict[str, Any]]]) -> None:
        path = Path(self.settings.failpoints_file)
        path.write_text(json.dumps(table))

    # -- reads --------------------------------------------------------------
    def instance(self, uuid: str) -> Instance:
        with self.db.snapshot() as s:
            inst = s.get(Instance, uuid)
            assert inst is not None
            return inst

    def migration(self, mig_id: int) -> Migration:
        with self.db.snapshot() as s:
            mig = s.get(Migration, mig_id)
            assert mig is not None
            return mig

    def journal(self, mig_id: int) -> list[StepJournal]:
        with self.db.snapshot() as s:
            return journal.rows(s, mig_id)

    def domains(self, host: str) -> dict[str, dict[str, Any]]:
        """The domains a host's worker has defined, by uuid (asked over the broker)."""
        node = f"{host}@{socket.gethostname()}"
        replies = self.app.control.broadcast(
            "resizeflow_domains", destination=[node], reply=True, timeout=5
        )
        by_node = {k: v for r in replies for k, v in r.items()}
        assert node in by_node, f"no reply from {node}: {replies}"
        return {d["uuid"]: d for d in by_node[node]}

    def instance_dir(self, host: str, uuid: str, suffix: str = "") -> Path:
        return self.settings.instances_dir(host) / f"{uuid}{suffix}"

    # -- waits --------------------------------------------------------------
    def wait_instance(self, uuid: str, vm_state: VmState, timeout: float = 60.0) -> Instance:
        def ready() -> Instance | None:
            inst = self.instance(uuid)
            if inst.vm_state == VmState.ERROR and vm_state != VmState.ERROR:
                raise AssertionError(f"{uuid} went to ERROR; faults: {self.faults(uuid)}")
            return inst if inst.vm_state == vm_state and inst.task_state is None else None

        return wait_for(ready, timeout, f"{uuid} to reach {vm_state.value}")

    def wait_migration(
        self, mig_id: int, status: MigrationStatus, timeout: float = 60.0
    ) -> Migration:
        def ready() -> Migration | None:
            mig = self.migration(mig_id)
            done = mig.status == status and all(
                r.status in (JournalStatus.DONE, JournalStatus.FAILED)
                or r.flow != self._flow(status)
                for r in self.journal(mig_id)
            )
            return mig if done else None

        return wait_for(ready, timeout, f"migration {mig_id} to reach {status.value}")

    @staticmethod
    def _flow(status: MigrationStatus) -> str:
        return {
            MigrationStatus.FINISHED: "resize",
            MigrationStatus.CONFIRMED: "confirm",
            MigrationStatus.REVERTED: "revert",
        }.get(status, "")

    def faults(self, uuid: str) -> list[str]:
        from resizeflow.db.models import InstanceFault

        with self.db.snapshot() as s:
            return list(
                s.scalars(select(InstanceFault.message).where(InstanceFault.instance_uuid == uuid))
            )

    def quiesce(self, timeout: float = 60.0) -> None:
        """Wait until no workflow step is queued or running and no task is in progress."""

        def idle() -> bool:
            with self.db.snapshot() as s:
                busy = s.scalar(
                    select(StepJournal.id)
                    .join(Migration, Migration.id == StepJournal.migration_id)
                    .where(
                        StepJournal.status.in_(
                            [JournalStatus.PENDING, JournalStatus.RUNNING, JournalStatus.RETRYING]
                        ),
                        Migration.status.not_in([MigrationStatus.ERROR, MigrationStatus.FAILED]),
                    )
                    .limit(1)
                )
                tasks = s.scalar(
                    select(Instance.uuid)
                    .where(Instance.task_state.is_not(None), Instance.deleted.is_(False))
                    .limit(1)
                )
            return busy is None and tasks is None

        wait_for(idle, timeout, "all workflows to settle")

    # -- boot helper --------------------------------------------------------
    def boot(
        self, project: str, flavor: str = "1", host: str | None = None, stopped: bool = False
    ) -> str:
        ctx = self.admin() if host else self.ctx(project)
        uuid = self.api.create(ctx, name=f"vm-{project}", flavor_ref=flavor, host=host)
        if host:
            # An admin booted it on a forced host; hand it to the project.
            with self.db.transaction() as s:
                inst = s.get(Instance, uuid)
                assert inst is not None
                inst.project_id = project
        self.wait_instance(uuid, VmState.ACTIVE)
        if stopped:
            self.api.stop(self.ctx(project), uuid)
            self.wait_instance(uuid, VmState.STOPPED)
        return uuid

    def notifications(self) -> list[dict[str, Any]]:
        """Drain the ``notifications.info`` queue."""
        from resizeflow.drivers.notifier import notification_queue

        out: list[dict[str, Any]] = []
        with Connection(
            self.settings.broker_url, transport_options=self.app.conf.broker_transport_options
        ) as conn:
            queue = notification_queue("info")(conn)
            queue.declare()
            while True:
                msg = queue.get(no_ack=True)
                if msg is None:
                    return out
                out.append(msg.payload)


def build_stack(
    backend: str,
    tmp: Path,
    hosts: tuple[str, ...] = ("host1", "host2"),
    broker: str = "redis",
) -> Stack:
    run_id = uuid.uuid4().hex[:10]
    state_dir = tmp / f"state-{backend}-{broker}"
    state_dir.mkdir(parents=True)
    db_url = create_pg_database() if backend == "postgresql" else ""
    vhost = create_vhost() if broker == "rabbitmq" else ""
    env = {
        **os.environ,
        "RESIZEFLOW_STATE_DIR": str(state_dir),
        "RESIZEFLOW_DATABASE_URL": db_url,
        "RESIZEFLOW_BROKER_URL": f"{RABBITMQ_URL}/{vhost}" if vhost else REDIS_URL,
        "RESIZEFLOW_BROKER_PREFIX": "" if vhost else f"rf-test-{run_id}:",
        "RESIZEFLOW_LIBVIRT_URI": "test:///default",
        "RESIZEFLOW_FAILPOINTS_FILE": str(state_dir / "failpoints.json"),
        "RESIZEFLOW_NODE_VCPUS": "64",
        "RESIZEFLOW_NODE_MEMORY_MB": "262144",
        "RESIZEFLOW_NODE_LOCAL_GB": "10000",
        "RESIZEFLOW_RETRY_BACKOFF": "0.05",
        "RESIZEFLOW_RETRY_BACKOFF_MAX": "0.5",
        "RESIZEFLOW_STEP_MAX_RETRIES": "4",
        "RESIZEFLOW_WORKER_CONCURRENCY": "4",
        "RESIZEFLOW_REPORT_INTERVAL": "1",
        "RESIZEFLOW_STEP_LEASE": "5",
    }
    if not db_url:
        env.pop("RESIZEFLOW_DATABASE_URL")
    settings = Settings.from_env(env)
    database = Database(settings.db_url)
    upgrade(database)
    app = make_app(settings)
    stack = Stack(
        backend=backend,
        state_dir=state_dir,
        env=env,
        settings=settings,
        db=database,
        app=app,
        api=ComputeAPI(settings, database, app),
        hosts=hosts,
        broker=broker,
        vhost=vhost,
    )
    for host in hosts:
        stack.start_worker(host)
    return stack


def destroy_stack(stack: Stack) -> None:
    stack.stop_api()
    for host in list(stack.workers):
        stack.stop_worker(host)
    stack.db.dispose()
    if stack.backend == "postgresql":
        drop_pg_database(stack.settings.db_url)
    if stack.vhost:
        delete_vhost(stack.vhost)
        return
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{stack.settings.broker_prefix}*", count=1000))
    # Celery's event and control fan-out keys are not prefixed per app.
    if keys:
        client.delete(*keys)
