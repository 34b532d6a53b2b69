"""A real resizeflow stack for tests: a database, a Redis broker, and worker processes.

The stack is built by :mod:`resizeflow.devstack`, as the demo's, the chaos
harness's and the bench's are; this module adds what tests read and wait for.
Each stack gets its own PostgreSQL database (or SQLite file), its own Redis key
prefix or RabbitMQ vhost and its own state dir, so concurrent runs never see
each other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from celery import Celery
from kombu import Connection
from sqlalchemy import select

from resizeflow.compute.api import ComputeAPI
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db import journal
from resizeflow.db.models import Instance, Migration, StepJournal
from resizeflow.db.scratch import create_database, drop_database
from resizeflow.db.session import Database
from resizeflow.devstack.stack import TEST_DRIVER_ENV, LocalStack, build
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


def require(url: str, port: int, name: str) -> None:
    """Skip when a service is not reachable; in CI (``CI`` set), fail instead."""
    if service_up(url, port):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} at {url} is not reachable, and CI needs it")
    pytest.skip(f"{name} at {url} is not reachable")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def create_pg_database() -> str:
    return create_database(PG_ADMIN_URL, "rf_test")


def drop_pg_database(url: str) -> None:
    drop_database(PG_ADMIN_URL, url)


class Stack:
    """A :class:`~resizeflow.devstack.stack.LocalStack` with what tests read and wait for."""

    def __init__(
        self, local: LocalStack, backend: str, hosts: tuple[str, ...], broker: str = "redis"
    ) -> None:
        self.local, self.backend, self.hosts, self.broker = local, backend, hosts, broker
        self.settings: Settings = local.settings
        self.db: Database = local.db
        self.app: Celery = local.app
        self.api: ComputeAPI = local.api
        self.state_dir: Path = local.state_dir

    @property
    def env(self) -> dict[str, str]:
        return self.local.sup.env

    @env.setter
    def env(self, value: dict[str, str]) -> None:
        self.local.sup.env = value

    @property
    def workers(self) -> dict[str, subprocess.Popen[bytes]]:
        """Each host's worker process, by host."""
        return {
            name.removeprefix("worker-"): proc
            for name, proc in self.local.sup.procs.items()
            if name.startswith("worker-")
        }

    # -- processes ----------------------------------------------------------
    def api_endpoint(self) -> str:
        """The ``/v2.1`` endpoint of this stack's ``resizeflow api``, started on first use."""
        if not self.local.sup.alive("api"):
            self.local.start_api()
        return self.local.api_url + "/v2.1"

    def stop_api(self) -> None:
        self.local.sup.stop("api")

    def start_worker(self, host: str) -> str:
        return self.local.start_worker(host, "--loglevel", "INFO")

    def start_beat(self, **env: str) -> subprocess.Popen[bytes]:
        """Start ``resizeflow beat``; ``env`` adds RESIZEFLOW_* settings for it alone."""
        return self.local.start_beat(env)

    def kill_worker(self, host: str) -> None:
        self.local.kill_worker(host)

    def stop_worker(self, host: str) -> None:
        self.local.stop_worker(host)

    def worker_log(self, host: str) -> str:
        return self.local.sup.log_path(f"worker-{host}").read_text(errors="replace")

    # -- requests -----------------------------------------------------------
    def ctx(
        self,
        project: str,
        user: str = "alice",
        admin: bool = False,
        roles: tuple[str, ...] | None = None,
    ) -> RequestContext:
        if roles is None:
            roles = ("admin", "member") if admin else ("member",)
        return RequestContext(user_id=user, project_id=project, roles=frozenset(roles))

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
        node = self.local.node(host)
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

    def notifications(self, priority: str = "info") -> list[dict[str, Any]]:
        """Drain ``versioned_notifications.<priority>``, where Nova's versioned
        notifications go, with kombu; each message out of its oslo.messaging envelope."""
        from resizeflow.openstack.notifier import notification_queue, unwrap

        out: list[dict[str, Any]] = []
        with Connection(
            self.settings.broker_url, transport_options=self.app.conf.broker_transport_options
        ) as conn:
            queue = notification_queue(priority)(conn)
            queue.declare()
            while True:
                msg = queue.get(no_ack=True)
                if msg is None:
                    return out
                out.append(unwrap(msg.payload))


def stack_env(state_dir: Path, **overrides: str) -> dict[str, str]:
    """The settings of a test stack: the test driver, failpoints, fast retries and leases."""
    return {
        **TEST_DRIVER_ENV,
        "RESIZEFLOW_FAILPOINTS_FILE": str(state_dir / "failpoints.json"),
        "RESIZEFLOW_RETRY_BACKOFF": "0.05",
        "RESIZEFLOW_RETRY_BACKOFF_MAX": "0.5",
        "RESIZEFLOW_STEP_MAX_RETRIES": "4",
        "RESIZEFLOW_WORKER_CONCURRENCY": "4",
        "RESIZEFLOW_REPORT_INTERVAL": "1",
        "RESIZEFLOW_STEP_LEASE": "5",
        **{f"RESIZEFLOW_{k.upper()}": v for k, v in overrides.items()},
    }


def build_stack(
    backend: str,
    tmp: Path,
    hosts: tuple[str, ...] = ("host1", "host2"),
    broker: str = "redis",
    **settings: str,
) -> Stack:
    """Each stack has its own database, Redis key prefix or RabbitMQ vhost, and state dir.

    ``settings`` are RESIZEFLOW_* settings for every process of the stack (lower case).
    """
    run_id = uuid.uuid4().hex[:10]
    state_dir = tmp / f"state-{backend}-{broker}"
    local = build(
        state_dir,
        broker=RABBITMQ_URL if broker == "rabbitmq" else REDIS_URL,
        vhost=f"rf-test-{run_id}" if broker == "rabbitmq" else "",
        broker_prefix="" if broker == "rabbitmq" else f"rf-test-{run_id}:",
        pg_admin_url=PG_ADMIN_URL if backend == "postgresql" else "",
        base_env=os.environ,
        log_dir=state_dir,
        env=stack_env(state_dir, **settings),
    )
    stack = Stack(local, backend, hosts, broker)
    try:
        local.spawn_storage()  # starts beside the workers; waited for after them
        local.start_workers(hosts)
        local.wait_storage()
    except BaseException:
        local.close()
        raise
    return stack


def destroy_stack(stack: Stack) -> None:
    stack.local.close()
