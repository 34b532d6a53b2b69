"""An isolated stack for one measurement, built by :mod:`resizeflow.devstack`.

One private redis-server serves the whole bench run (see :class:`BenchShared`);
each stack gets a key prefix of its own on it, its own PostgreSQL database (or
SQLite file), its own state dir and its own workers. Everything started is
stopped, and every database created is dropped, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Celery

from resizeflow.compute.api import ComputeAPI
from resizeflow.conf import Settings
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import start_redis
from resizeflow.devstack.stack import LocalStack, build
from resizeflow.devstack.supervisor import Supervisor

DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# Room for thousands of servers per node; quotas off, so load is the only limit.
STACK_ENV = {
    "RESIZEFLOW_LIBVIRT_URI": "test:///default",
    "RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT": "local",
    "RESIZEFLOW_NODE_VCPUS": "100000",
    "RESIZEFLOW_NODE_MEMORY_MB": "100000000",
    "RESIZEFLOW_NODE_LOCAL_GB": "100000000",
    "RESIZEFLOW_QUOTA_CORES": "-1",
    "RESIZEFLOW_QUOTA_RAM": "-1",
    "RESIZEFLOW_QUOTA_INSTANCES": "-1",
    # Fixed IPs for every server of the largest grid point (the default is a /24).
    "RESIZEFLOW_FIXED_RANGE": "10.0.0.0/16",
    "RESIZEFLOW_LOG_LEVEL": "WARNING",
    "RESIZEFLOW_LOG_FORMAT": "json",
}


@dataclass
class BenchShared:
    """What the whole run shares: the private redis-server and the PostgreSQL admin URL."""

    root: Path
    pg_admin_url: str
    sup: Supervisor
    broker_url: str = ""

    def start(self) -> None:
        self.broker_url = start_redis(self.sup)


class BenchStack:
    """Workers for ``hosts`` on a fresh database, and the service layer to drive them."""

    def __init__(self, name: str, backend: str, hosts: list[str], local: LocalStack) -> None:
        self.name, self.backend, self.hosts, self.local = name, backend, hosts, local
        self.settings: Settings = local.settings
        self.db: Database = local.db
        self.app: Celery = local.app
        self.api: ComputeAPI = local.api

    def worker_pids(self) -> dict[str, int]:
        procs = self.local.sup.procs
        return {
            h: procs[f"worker-{h}"].pid
            for h in self.hosts
            if f"worker-{h}" in procs and procs[f"worker-{h}"].poll() is None
        }


def _worker_argv(host: str, probe_out: Path | None, worker: str) -> list[str]:
    """The bench's own worker (the no-op tasks registered), or the instrumented one."""
    if probe_out is None:
        return [sys.executable, "-m", worker, host]
    return [sys.executable, "-m", "bench.probe", host, str(probe_out / f"{host}.json")]


@contextmanager
def stack(
    shared: BenchShared,
    name: str,
    *,
    hosts: int,
    backend: str = "postgresql",
    concurrency: int = 4,
    probe_out: Path | None = None,
    worker: str = "bench.worker",
) -> Iterator[BenchStack]:
    """Start a stack; ``probe_out`` runs instrumented workers that write stats there.

    ``worker`` is the workers' module: ``bench.taskflow_worker`` serves TaskFlow's
    tasks too, for the peer phase.
    """
    names = [f"bench-{i + 1}" for i in range(hosts)]
    local = build(
        shared.root / name,
        broker=shared.broker_url,
        broker_prefix=f"rfb-{name}:",
        pg_admin_url=shared.pg_admin_url if backend == "postgresql" else "",
        env={
            **STACK_ENV,
            "RESIZEFLOW_WORKER_CONCURRENCY": str(concurrency),
            # One host cannot resize anywhere but onto itself.
            "RESIZEFLOW_ALLOW_RESIZE_TO_SAME_HOST": "true" if hosts == 1 else "false",
        },
    )
    try:
        spawned = [
            local.spawn_worker(host, argv=_worker_argv(host, probe_out, worker)) for host in names
        ]
        local.wait_workers(spawned, timeout=120)
        yield BenchStack(name=name, backend=backend, hosts=names, local=local)
    finally:
        local.close()
