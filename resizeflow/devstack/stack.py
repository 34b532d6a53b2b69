"""Build a whole stack of local processes on a fresh database and broker.

:func:`build` prepares the state dir, the broker (a private redis-server, a
key prefix on a shared Redis, or a RabbitMQ vhost of its own) and the
database (SQLite under the state dir, a scratch PostgreSQL database, or a
given URL), upgrades the schema, and returns a :class:`LocalStack` that
starts workers, beat, the API and Flower as processes of its supervisor.
:meth:`LocalStack.close` stops them all and drops what ``build`` created,
on success, failure or Ctrl-C alike.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from subprocess import Popen

from celery import Celery
from sqlalchemy import select

from resizeflow.celery_app import make_app
from resizeflow.compute.api import ComputeAPI
from resizeflow.conf import Settings
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import Network, Port, Subnet, TunnelEndpoint, WorkerProcess, utcnow
from resizeflow.db.scratch import create_database, drop_database
from resizeflow.db.session import Database
from resizeflow.devstack.brokers import create_vhost, delete_vhost, purge_prefix, start_redis
from resizeflow.devstack.supervisor import Supervisor
from resizeflow.dhcp.agent import remove_agent_leftovers
from resizeflow.storage.qsd import kill_daemon

# The broker argument of :func:`build` that starts a redis-server of the stack's own.
PRIVATE_REDIS = "private-redis"

# The libvirt test driver, with room for many servers on every simulated host.
TEST_DRIVER_ENV = {
    "RESIZEFLOW_LIBVIRT_URI": "test:///default",
    # Every host of a stack on one machine: disks move through its filesystem.
    "RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT": "local",
    "RESIZEFLOW_NODE_VCPUS": "64",
    "RESIZEFLOW_NODE_MEMORY_MB": "262144",
    "RESIZEFLOW_NODE_LOCAL_GB": "10000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port(address: str = "127.0.0.1") -> int:
    """A UDP port free on ``address`` now: a VXLAN device's of a host of this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def clean_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its RESIZEFLOW_* settings, which the stack sets."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not k.startswith("RESIZEFLOW_")}


@dataclass
class LocalStack:
    """A database, a broker and the processes started on them."""

    sup: Supervisor
    settings: Settings
    db: Database
    app: Celery
    api: ComputeAPI
    # Undo what build() created, newest first.
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    # Supervisor process name -> Celery node name.
    nodes: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    flower_url: str = ""
    _network_started: dt.datetime = field(default_factory=utcnow)

    @property
    def env(self) -> dict[str, str]:
        return self.sup.env

    @property
    def state_dir(self) -> Path:
        return self.sup.state_dir

    # -- workers ------------------------------------------------------------
    def spawn_worker(
        self,
        host: str,
        *args: str,
        name: str = "",
        argv: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> str:
        """Start a worker process of ``host`` without waiting; returns its process name.

        ``env``: settings of this worker only, over the stack's (a host's own
        migration address, say).
        """
        name = name or f"worker-{host}"
        argv = argv or [
            sys.executable,
            "-m",
            "resizeflow",
            "worker",
            "--host",
            host,
            "--register",  # a stack's hosts are new on its fresh database
            *args,
        ]
        self.sup.spawn(name, argv, env)
        return name

    def wait_workers(self, names: Iterable[str], timeout: float = 60.0) -> list[str]:
        """Wait until each named worker process answers a ping; returns their node names."""
        names = list(names)
        for name in names:
            pid = self.sup.procs[name].pid
            # The node name comes from the slot the process took when it joined its host.
            self.sup.wait_until(
                f"{name} to join its host", partial(self._node_of, pid), timeout, watch=(name,)
            )
            self.nodes[name] = self._node_of(pid) or ""
        nodes = [self.nodes[n] for n in names]
        self._wait_pings(", ".join(names), nodes, tuple(names), timeout)
        return nodes

    def _wait_pings(
        self, what: str, nodes: list[str], watch: tuple[str, ...], timeout: float
    ) -> None:
        """Wait until each of ``nodes`` answers a ping; fail early if a watched process exits."""
        self.sup.wait_until(
            f"{what} to answer a ping", partial(self._answering, nodes), timeout, watch=watch
        )

    def _answering(self, nodes: list[str]) -> bool:
        """Whether every one of ``nodes`` answers a ping now.

        Each try has a connection of its own, not one from the app's pool: a
        broker that restarted (a test may restart it on purpose) leaves the
        pool's connections dead.
        """
        with self.app.connection_for_write() as conn:
            broken: tuple[type[BaseException], ...] = (
                OSError,
                *conn.connection_errors,
                *conn.channel_errors,
            )
            try:
                found = self.app.control.ping(destination=nodes, timeout=0.5, connection=conn)
            except broken:
                return False
        return len(found or []) == len(nodes)

    def _node_of(self, pid: int) -> str | None:
        with self.db.snapshot() as s:
            return s.scalar(
                select(WorkerProcess.node).where(
                    WorkerProcess.pid == pid, WorkerProcess.machine == socket.gethostname()
                )
            )

    def start_worker(
        self,
        host: str,
        *args: str,
        name: str = "",
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> str:
        """Start a worker process of ``host`` and wait for it; returns its node name."""
        return self.wait_workers([self.spawn_worker(host, *args, name=name, env=env)], timeout)[0]

    def start_workers(
        self,
        hosts: Iterable[str],
        timeout: float = 120.0,
        env: Mapping[str, dict[str, str]] | None = None,
    ) -> list[str]:
        """Start one worker per host, all at once, and wait for every one.

        ``env``: per host, settings of that host's worker only.
        """
        env = env or {}
        return self.wait_workers([self.spawn_worker(h, env=env.get(h)) for h in hosts], timeout)

    def node(self, host: str) -> str:
        """The node name of ``host``'s worker started by this stack."""
        return self.nodes[f"worker-{host}"]

    def stop_worker(self, host: str, name: str = "", grace: float = 30.0) -> int | None:
        """SIGTERM: Celery's warm shutdown; returns the exit code."""
        name = name or f"worker-{host}"
        self.nodes.pop(name, None)
        return self.sup.stop(name, grace)

    def kill_worker(self, host: str, name: str = "") -> None:
        """SIGKILL: no warm shutdown, no goodbye heartbeat, unacked messages stay unacked."""
        name = name or f"worker-{host}"
        self.nodes.pop(name, None)
        self.sup.kill(name)

    # -- the storage host ---------------------------------------------------
    def spawn_storage(self, env: dict[str, str] | None = None) -> Popen[bytes]:
        """Start ``resizeflow storage`` (the block-storage host) without waiting."""
        storage_dir = Settings.from_env({**self.env, **(env or {})}).storage_dir()
        # After a SIGKILL its daemon outlives it: the stack's end removes it too.
        self.cleanups.append(partial(kill_daemon, storage_dir))
        return self.sup.resizeflow("storage", "storage", env=env)

    def wait_storage(self, timeout: float = 60.0) -> str:
        """Wait until the storage host answers a ping: its connections are exported by then."""
        machine = self.settings.worker_name or socket.gethostname()
        node = f"{self.settings.storage_host}@{machine}"
        self._wait_pings("the storage host", [node], ("storage",), timeout)
        self.nodes["storage"] = node
        return node

    def start_storage(self, env: dict[str, str] | None = None, timeout: float = 60.0) -> str:
        self.spawn_storage(env)
        return self.wait_storage(timeout)

    def stop_storage(self, grace: float = 30.0) -> int | None:
        """SIGTERM: the storage host stops its daemon (the exports go, the record stays)."""
        self.nodes.pop("storage", None)
        return self.sup.stop("storage", grace)

    # -- the DHCP agent -----------------------------------------------------
    def network_env(self) -> dict[str, str]:
        """The DHCP agent's own tunnel endpoint: a loopback address and a free UDP port."""
        return {
            "RESIZEFLOW_TUNNEL_ADDRESS": "127.0.0.1",
            "RESIZEFLOW_VXLAN_PORT": str(free_udp_port("127.0.0.1")),
        }

    def spawn_network(self, env: dict[str, str] | None = None) -> Popen[bytes]:
        """Start ``resizeflow network`` (the DHCP agent) without waiting."""
        env = {**self.network_env(), **(env or {})}
        settings = Settings.from_env({**self.env, **env})
        # After a SIGKILL its dnsmasq processes and namespaces outlive it.
        self.cleanups.append(partial(remove_agent_leftovers, settings))
        self._network_started = utcnow()
        return self.sup.resizeflow("network", "network", env=env)

    def wait_network(self, timeout: float = 60.0) -> None:
        """Wait until the agent has synced since its start: its tunnel endpoint
        refreshed, and every network with a DHCP subnet served by an ACTIVE port."""
        self.sup.wait_until(
            "the DHCP agent to serve every network",
            self._network_ready,
            timeout,
            watch=("network",),
        )

    def _network_ready(self) -> bool:
        host = Settings.from_env({**self.env}).dhcp_host
        with self.db.snapshot() as s:
            endpoint = s.get(TunnelEndpoint, host)
            if endpoint is None or endpoint.updated_at < self._network_started:
                return False
            dhcp = select(Subnet.network_id).where(Subnet.enable_dhcp.is_(True))
            nets = set(s.scalars(select(Network.id).where(Network.id.in_(dhcp))))
            ports = s.execute(
                select(Port.network_id, Port.device_id).where(
                    Port.device_owner == "network:dhcp", Port.status == "ACTIVE"
                )
            )
            served = {n for n, dev in ports if dev == f"dhcp-{host}-{n}"}
        return nets <= served

    def start_network(self, env: dict[str, str] | None = None, timeout: float = 60.0) -> None:
        self.spawn_network(env)
        self.wait_network(timeout)

    def stop_network(self, grace: float = 30.0) -> int | None:
        """SIGTERM: the agent stops its dnsmasq processes and removes its namespaces."""
        return self.sup.stop("network", grace)

    # -- beat, API, Flower --------------------------------------------------
    def start_beat(self, env: dict[str, str] | None = None, timeout: float = 60.0) -> Popen[bytes]:
        proc = self.sup.resizeflow("beat", "beat", env=env)
        self._wait_pings("beat", [f"beat@{socket.gethostname()}"], ("beat",), timeout)
        return proc

    def start_api(self, port: int = 0, timeout: float = 60.0) -> str:
        """Start ``resizeflow api`` on 127.0.0.1; returns its base URL."""
        port = port or free_port()
        self.sup.resizeflow("api", "api", "--bind", "127.0.0.1", "--port", str(port))
        self.api_url = f"http://127.0.0.1:{port}"
        self.sup.wait_until("the API to listen", lambda: _listening(port), timeout, watch=("api",))
        return self.api_url

    def start_flower(
        self, port: int = 0, env: dict[str, str] | None = None, timeout: float = 60.0
    ) -> str:
        """Start ``resizeflow flower`` on 127.0.0.1 and wait until it receives the
        workers' events; returns its URL.

        NOTE: Flower only knows the tasks whose events it received, so work
        sent before its event consumer is connected never shows up in it.
        The wait is on Flower's own gauge of the workers it heard online.
        """
        port = port or free_port()
        self.sup.resizeflow("flower", "flower", "--port", str(port), env=env)
        self.flower_url = f"http://127.0.0.1:{port}"
        workers = list(self.nodes.values())
        auth = {**self.env, **(env or {})}.get("RESIZEFLOW_FLOWER_BASIC_AUTH", "")
        self.sup.wait_until(
            "Flower to receive the workers' events",
            lambda: _flower_hears(self.flower_url, workers, auth),
            timeout,
            watch=("flower",),
        )
        return self.flower_url

    # -- the end ------------------------------------------------------------
    def close(self, grace: float = 30.0) -> None:
        try:
            self.sup.stop_all(grace)
            self.db.dispose()
        finally:
            for undo in reversed(self.cleanups):
                with contextlib.suppress(Exception):
                    undo()
            self.cleanups.clear()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _flower_hears(url: str, workers: list[str], auth: str = "") -> bool:
    """Whether Flower's event consumer has heard every worker come online."""
    request = urllib.request.Request(f"{url}/metrics")  # noqa: S310
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:  # noqa: S310
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return False
    online = {
        line.split('worker="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("flower_worker_online{") and line.endswith(" 1.0")
    }
    return set(workers) <= online


def build(
    state_dir: Path,
    *,
    broker: str = PRIVATE_REDIS,
    broker_prefix: str = "",
    vhost: str = "",
    database_url: str = "",
    pg_admin_url: str = "",
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> LocalStack:
    """Prepare a stack in ``state_dir``; start its processes with its methods.

    - ``broker``: :data:`PRIVATE_REDIS`, or a Redis URL (with ``broker_prefix``
      to share it), or an AMQP URL (with ``vhost``, created and deleted here);
    - ``database_url``, else a scratch database made from ``pg_admin_url``,
      else SQLite under the state dir;
    - ``env``: RESIZEFLOW_* settings of the stack, over ``base_env`` (the
      caller's environment, without its own RESIZEFLOW_* settings).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    # Every process of the stack, its redis-server too, carries its state dir:
    # what a stack started can be found by it.
    sup = Supervisor(
        state_dir=state_dir,
        env={**clean_environ(base_env), "RESIZEFLOW_STATE_DIR": str(state_dir)},
        logs=log_dir,
    )
    cleanups: list[Callable[[], None]] = []
    try:
        if broker == PRIVATE_REDIS:
            broker_url = start_redis(sup)
        elif vhost:
            broker_url = create_vhost(broker, vhost)
            cleanups.append(lambda: delete_vhost(vhost))
        else:
            broker_url = broker
            if broker_prefix:
                cleanups.append(lambda: purge_prefix(broker, broker_prefix))
        if not database_url and pg_admin_url:
            database_url = create_database(pg_admin_url, "rf_stack")
            scratch = database_url
            cleanups.append(lambda: drop_database(pg_admin_url, scratch))
        sup.env.update(
            {
                # The storage host's NBD server: a port of this stack's own.
                "RESIZEFLOW_STORAGE_PORT": str(free_port()),
                "RESIZEFLOW_BROKER_URL": broker_url,
                **({"RESIZEFLOW_BROKER_PREFIX": broker_prefix} if broker_prefix else {}),
                **({"RESIZEFLOW_DATABASE_URL": database_url} if database_url else {}),
                **(env or {}),
            }
        )
        settings = Settings.from_env(sup.env)
        database = Database(settings.db_url)
        upgrade(database)
        app = make_app(settings)
    except BaseException:
        sup.stop_all()
        for undo in reversed(cleanups):
            with contextlib.suppress(Exception):
                undo()
        raise
    return LocalStack(
        sup=sup,
        settings=settings,
        db=database,
        app=app,
        api=ComputeAPI(settings, database, app),
        cleanups=cleanups,
    )
