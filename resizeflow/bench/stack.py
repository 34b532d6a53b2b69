"""An isolated stack for one measurement: a database, worker processes, a ComputeAPI.

One private redis-server serves the whole bench run (see :class:`Services`); each
stack gets a key prefix of its own on it, its own PostgreSQL database (or SQLite
file), its own state dir and its own workers. Everything started is stopped, and
every database created is dropped, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery

from resizeflow.celery_app import make_app
from resizeflow.cli.supervisor import Supervisor, start_redis
from resizeflow.compute.api import ComputeAPI
from resizeflow.conf import Settings
from resizeflow.db.migrate import upgrade
from resizeflow.db.scratch import create_database, drop_database
from resizeflow.db.session import Database

DEFAULT_PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# Room for thousands of servers per node; quotas off, so load is the only limit.
STACK_ENV = {
    "RESIZEFLOW_LIBVIRT_URI": "test:///default",
    "RESIZEFLOW_NODE_VCPUS": "100000",
    "RESIZEFLOW_NODE_MEMORY_MB": "100000000",
    "RESIZEFLOW_NODE_LOCAL_GB": "100000000",
    "RESIZEFLOW_QUOTA_CORES": "-1",
    "RESIZEFLOW_QUOTA_RAM": "-1",
    "RESIZEFLOW_QUOTA_INSTANCES": "-1",
    "RESIZEFLOW_LOG_LEVEL": "WARNING",
    "RESIZEFLOW_LOG_FORMAT": "json",
}


@dataclass
class Services:
    """What the whole run shares: the private redis-server and the PostgreSQL admin URL."""

    root: Path
    pg_admin_url: str
    sup: Supervisor
    broker_url: str = ""

    def start(self) -> None:
        self.broker_url = start_redis(self.sup)


@dataclass
class Stack:
    """Workers for ``hosts`` on a fresh database, and the service layer to drive them."""

    name: str
    backend: str  # "postgresql" or "sqlite"
    hosts: list[str]
    settings: Settings
    db: Database
    app: Celery
    api: ComputeAPI
    sup: Supervisor
    env: dict[str, str] = field(default_factory=dict)

    def worker_pids(self) -> dict[str, int]:
        return {h: p.pid for h, p in self.sup.procs.items() if p.poll() is None and h in self.hosts}

    def nodes(self) -> list[str]:
        return [f"{h}@{socket.gethostname()}" for h in self.hosts]


def _worker_argv(host: str, probe_out: Path | None) -> list[str]:
    if probe_out is None:
        return [
            sys.executable,
            "-m",
            "resizeflow",
            "worker",
            "--host",
            host,
            "--loglevel",
            "WARNING",
        ]
    return [sys.executable, "-m", "resizeflow.bench.probe", host, str(probe_out / f"{host}.json")]


@contextmanager
def stack(
    services: Services,
    name: str,
    *,
    hosts: int,
    backend: str = "postgresql",
    concurrency: int = 4,
    probe_out: Path | None = None,
) -> Iterator[Stack]:
    """Start a stack; ``probe_out`` runs instrumented workers that write stats there."""
    state_dir = services.root / name
    state_dir.mkdir(parents=True)
    names = [f"bench-{i + 1}" for i in range(hosts)]
    prefix = f"rfb-{name}:"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RESIZEFLOW_")},
        **STACK_ENV,
        "RESIZEFLOW_STATE_DIR": str(state_dir),
        "RESIZEFLOW_BROKER_URL": services.broker_url,
        "RESIZEFLOW_BROKER_PREFIX": prefix,
        "RESIZEFLOW_WORKER_CONCURRENCY": str(concurrency),
        # One host cannot resize anywhere but onto itself.
        "RESIZEFLOW_ALLOW_RESIZE_TO_SAME_HOST": "true" if hosts == 1 else "false",
    }
    db_url = ""
    if backend == "postgresql":
        db_url = create_database(services.pg_admin_url, "rf_bench")
        env["RESIZEFLOW_DATABASE_URL"] = db_url
    sup = Supervisor(state_dir=state_dir, env=env)
    database: Database | None = None
    try:
        settings = Settings.from_env(env)
        database = Database(settings.db_url)
        upgrade(database)
        app = make_app(settings)
        for host in names:
            sup.spawn(host, _worker_argv(host, probe_out))
        built = Stack(
            name=name,
            backend=backend,
            hosts=names,
            settings=settings,
            db=database,
            app=app,
            api=ComputeAPI(settings, database, app),
            sup=sup,
            env=env,
        )
        nodes = built.nodes()
        sup.wait_until(
            f"{hosts} workers",
            lambda: len(app.control.ping(destination=nodes, timeout=0.5) or []) == len(nodes),
            timeout=120,
        )
        yield built
    finally:
        sup.stop_all()
        if database is not None:
            database.dispose()
        if db_url:
            with suppress(Exception):
                drop_database(services.pg_admin_url, db_url)
