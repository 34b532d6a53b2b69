"""Real Nova and Placement, started on loopback for one conformance run, then removed.

Everything a run makes is its own: four PostgreSQL databases (Nova's API
database, cell0, cell1 and Placement's), a RabbitMQ vhost, a directory for the
configuration files and logs, and the processes: Placement and nova-api under
gunicorn, nova-conductor, nova-scheduler and two nova-compute with Nova's fake
virt driver. Computes get a configuration file without the database settings,
as in a real deployment. Neutron and Glance are the stand-ins of
:mod:`tests.conformance.standins`. :meth:`NovaDeployment.close` stops every
process and drops the databases and the vhost; every wait is bounded.

Nova runs from its own virtualenv (``.venv-nova``, made by ``make nova-venv``
from the pins in this directory), never from resizeflow's.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from resizeflow.db.scratch import create_database, drop_database
from resizeflow.devstack.brokers import create_vhost, delete_vhost
from resizeflow.devstack.supervisor import Supervisor
from tests.conformance import standins

ROOT = Path(__file__).resolve().parents[2]
NOVA_VENV = Path(os.environ.get("RESIZEFLOW_NOVA_VENV", ROOT / ".venv-nova"))
NOVASIDE = Path(__file__).resolve().parent / "novaside"
COMPUTE_HOSTS = ("cf-host1", "cf-host2")
# Nova's classic flavors, as resizeflow seeds them: (flavorid, name, vcpus, ram, disk).
FLAVORS = (
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
)
START_TIMEOUT = 240.0


def require_service(why: str | None, what: str) -> None:
    """A test that needs ``what`` (real Nova, real Keystone) skips where ``why`` says
    it cannot run, and fails in CI, where everything must run."""
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"this test needs {what}: {why}")
    pytest.skip(why)


def nova_available() -> str | None:
    """Why Nova cannot run here, or None when its virtualenv is in place."""
    for exe in ("gunicorn", "nova-manage", "nova-compute", "nova-conductor", "nova-scheduler"):
        if not (NOVA_VENV / "bin" / exe).exists():
            return f"{NOVA_VENV / 'bin' / exe} is missing: run `make nova-venv`"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _psycopg2_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1).replace(
        "postgresql+psycopg2://", "postgresql://", 1
    )


@dataclass
class NovaDeployment:
    """One run's Nova; :meth:`start` brings it up, :meth:`close` removes all of it."""

    run_dir: Path
    pg_admin_url: str
    amqp_url: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    databases: dict[str, str] = field(default_factory=dict)
    vhost: str = ""
    sup: Supervisor | None = None
    glance: standins.StandIn | None = None
    neutron: standins.StandIn | None = None
    api_port: int = 0
    placement_port: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/v2.1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def etc(self) -> Path:
        return self.run_dir / "etc"

    # -- start ------------------------------------------------------------------
    def start(self) -> NovaDeployment:
        began = time.monotonic()
        self.run_dir = self.run_dir.resolve()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "VIRTUAL_ENV"))}
        env["PATH"] = f"{NOVA_VENV / 'bin'}:{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(NOVASIDE)
        self.sup = Supervisor(self.run_dir, env, logs=self.run_dir / "logs")
        self.glance = standins.glance().start()
        self.neutron = standins.Neutron().stand_in().start()
        for name in ("api", "cell0", "cell1", "placement"):
            self.databases[name] = create_database(self.pg_admin_url, f"cf_nova_{name}")
        self.vhost = f"cf-nova-{self.run_id}"
        transport = create_vhost(self.amqp_url, self.vhost)
        self.api_port, self.placement_port = free_port(), free_port()
        self._write_config(transport.replace("amqp://", "rabbit://", 1))
        # Placement syncs its own schema as it starts; Nova's databases meanwhile.
        self._start_wsgi("placement", "placement.wsgi.api:application", self.placement_port)
        self._manage("api_db", "sync")
        self._manage(
            "cell_v2",
            "map_cell0",
            "--database_connection",
            _psycopg2_url(self.databases["cell0"]),
        )
        self._manage("cell_v2", "create_cell", "--name", "cell1")
        self._manage("db", "sync")
        self.timings["databases"] = time.monotonic() - began
        conf = [f"--config-file={self.etc / 'nova.conf'}", f"--config-file={self.etc / 'db.conf'}"]
        self.sup.spawn("conductor", [str(NOVA_VENV / "bin" / "nova-conductor"), *conf])
        self.sup.spawn("scheduler", [str(NOVA_VENV / "bin" / "nova-scheduler"), *conf])
        for host in COMPUTE_HOSTS:
            self.sup.spawn(
                f"compute-{host}",
                [
                    str(NOVA_VENV / "bin" / "nova-compute"),
                    f"--config-file={self.etc / 'nova.conf'}",
                    f"--config-file={self.etc / f'{host}.conf'}",
                ],
            )
        self._start_wsgi("api", "nova.wsgi.osapi_compute:application", self.api_port)
        self.sup.wait_until(
            "placement to answer", self._placement_up, START_TIMEOUT, watch=("placement",)
        )
        self.sup.wait_until(
            "both compute nodes to be recorded",
            lambda: self._count("cell1", "SELECT count(*) FROM compute_nodes") == 2,
            START_TIMEOUT,
            watch=tuple(f"compute-{h}" for h in COMPUTE_HOSTS),
        )
        self._manage("cell_v2", "discover_hosts")
        self.sup.wait_until(
            "both hosts mapped to cell1",
            lambda: self._count("api", "SELECT count(*) FROM host_mappings") == 2,
            30,
        )
        self.sup.wait_until(
            "both resource providers in placement", self._providers_ready, START_TIMEOUT
        )
        self.sup.wait_until(
            "nova-api to answer", self._api_up, START_TIMEOUT, watch=("api", "conductor")
        )
        self._create_flavors()
        self.timings["start"] = time.monotonic() - began
        return self

    def _write_config(self, transport_url: str) -> None:
        placement = f"http://127.0.0.1:{self.placement_port}"
        assert self.glance is not None and self.neutron is not None
        common = f"""
[DEFAULT]
transport_url = {transport_url}
state_path = {self.run_dir / "state"}
instances_path = {self.run_dir / "instances"}
my_ip = 127.0.0.1
debug = false
use_stderr = true
resize_confirm_window = 0
allow_resize_to_same_host = false
[oslo_concurrency]
lock_path = {self.run_dir / "lock"}
[oslo_messaging_notifications]
driver = noop
[api]
auth_strategy = keystone
[scheduler]
discover_hosts_in_cells_interval = -1
[placement]
auth_type = admin_token
endpoint = {placement}
token = admin
[neutron]
auth_type = admin_token
endpoint = {self.neutron.url}
token = admin
endpoint_override = {self.neutron.url}
[glance]
endpoint_override = {self.glance.url}
[cinder]
os_region_name = RegionOne
[os_vif_ovs]
isolate_vif = false
[workarounds]
disable_compute_service_check_for_ffu = true
"""
        (self.etc / "nova.conf").write_text(common)
        (self.etc / "db.conf").write_text(
            f"""
[DEFAULT]
host = cf-controller
[api_database]
connection = {_psycopg2_url(self.databases["api"])}
[database]
connection = {_psycopg2_url(self.databases["cell1"])}
"""
        )
        for host in COMPUTE_HOSTS:
            (self.etc / f"{host}.conf").write_text(
                f"""
[DEFAULT]
host = {host}
compute_driver = fake.FakeDriver
"""
            )
        (self.etc / "api-paste.ini").write_text(
            """
[composite:osapi_compute]
use = call:nova.api.openstack.urlmap:urlmap_factory
/: oscomputeversions
/v2: oscomputeversion_legacy_v2
/v2.1: oscomputeversion_v2
/v2/+: openstack_compute_api_v21_legacy_v2_compatible
/v2.1/+: openstack_compute_api_v21

[composite:openstack_compute_api_v21]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit osprofiler
  rftoken keystonecontext osapi_compute_app_v21

[composite:openstack_compute_api_v21_legacy_v2_compatible]
use = call:nova.api.auth:pipeline_factory_v21
keystone = cors http_proxy_to_wsgi compute_req_id faultwrap request_log sizelimit osprofiler
  rftoken keystonecontext legacy_v2_compatible osapi_compute_app_v21

[filter:request_log]
paste.filter_factory = nova.api.openstack.requestlog:RequestLog.factory
[filter:compute_req_id]
paste.filter_factory = nova.api.compute_req_id:ComputeReqIdMiddleware.factory
[filter:faultwrap]
paste.filter_factory = nova.api.openstack:FaultWrapper.factory
[filter:osprofiler]
paste.filter_factory = nova.profiler:WsgiMiddleware.factory
[filter:sizelimit]
paste.filter_factory = oslo_middleware:RequestBodySizeLimiter.factory
[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
[filter:legacy_v2_compatible]
paste.filter_factory = nova.api.openstack:LegacyV2CompatibleWrapper.factory
[app:osapi_compute_app_v21]
paste.app_factory = nova.api.openstack.compute:APIRouterV21.factory
[pipeline:oscomputeversions]
pipeline = cors faultwrap request_log http_proxy_to_wsgi oscomputeversionapp
[pipeline:oscomputeversion_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi oscomputeversionapp_v2
[pipeline:oscomputeversion_legacy_v2]
pipeline = cors compute_req_id faultwrap request_log http_proxy_to_wsgi legacy_v2_compatible
  oscomputeversionapp_v2
[app:oscomputeversionapp]
paste.app_factory = nova.api.openstack.compute.versions:Versions.factory
[app:oscomputeversionapp_v2]
paste.app_factory = nova.api.openstack.compute.versions:VersionsV2.factory
[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = nova
[filter:keystonecontext]
paste.filter_factory = nova.api.auth:NovaKeystoneContext.factory
# In place of keystonemiddleware's authtoken: resizeflow's noauth tokens (user:project).
[filter:rftoken]
paste.filter_factory = rf_nova_auth:filter_factory
"""
        )
        placement_dir = self.etc / "placement"
        placement_dir.mkdir(exist_ok=True)
        (placement_dir / "placement.conf").write_text(
            f"""
[DEFAULT]
debug = false
[api]
auth_strategy = noauth2
[placement_database]
connection = {_psycopg2_url(self.databases["placement"])}
sync_on_startup = true
"""
        )

    def _start_wsgi(self, name: str, app: str, port: int) -> None:
        """gunicorn with no arguments of its own: nova-api parses ``sys.argv``."""
        assert self.sup is not None
        home = self.run_dir / f"wsgi-{name}"
        home.mkdir(exist_ok=True)
        (home / "gunicorn.conf.py").write_text(
            f'wsgi_app = "{app}"\n'
            f'bind = "127.0.0.1:{port}"\n'
            "workers = 1\n"
            'worker_class = "gthread"\n'
            "threads = 4\n"
            "timeout = 120\n"
            "graceful_timeout = 5\n"
            # No control socket: gunicorn's default is one shared path in the home
            # directory, which the two servers (and any other run) would both take.
            "control_socket_disable = True\n"
        )
        env = {
            "OS_NOVA_CONFIG_DIR": str(self.etc),
            "OS_NOVA_CONFIG_FILES": "api-paste.ini;nova.conf;db.conf",
            "OS_PLACEMENT_CONFIG_DIR": str(self.etc / "placement"),
        }
        gunicorn = NOVA_VENV / "bin" / "gunicorn"
        self.sup.spawn(name, ["/bin/sh", "-c", f"cd {home} && exec {gunicorn}"], env)

    def _manage(self, *args: str) -> None:
        conf = [f"--config-file={self.etc / 'nova.conf'}", f"--config-file={self.etc / 'db.conf'}"]
        argv = [str(NOVA_VENV / "bin" / "nova-manage"), *conf, *args]
        assert self.sup is not None
        done = subprocess.run(
            argv, env=self.sup.env, capture_output=True, text=True, timeout=180, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"nova-manage {' '.join(args)} failed:\n{done.stdout}{done.stderr}")

    def _count(self, db: str, sql: str) -> int:
        try:
            with psycopg.connect(_libpq(self.databases[db]), connect_timeout=5) as conn:
                row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
        except psycopg.Error:
            return -1  # the table does not exist yet
        return int(row[0]) if row else 0

    def _placement_up(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.placement_port}/", timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def _providers_ready(self) -> bool:
        r = httpx.get(
            f"http://127.0.0.1:{self.placement_port}/resource_providers",
            headers={"X-Auth-Token": "admin", "OpenStack-API-Version": "placement 1.14"},
            timeout=5,
        )
        if r.status_code != 200:
            return False
        names = {p["name"] for p in r.json()["resource_providers"]}
        return names >= set(COMPUTE_HOSTS)

    def _api_up(self) -> bool:
        try:
            r = httpx.get(
                f"{self.endpoint}/flavors", headers={"X-Auth-Token": "admin:admin"}, timeout=5
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def _create_flavors(self) -> None:
        for flavorid, name, vcpus, ram, disk in FLAVORS:
            r = httpx.post(
                f"{self.endpoint}/flavors",
                headers={"X-Auth-Token": "admin:admin"},
                json={
                    "flavor": {
                        "id": flavorid,
                        "name": name,
                        "vcpus": vcpus,
                        "ram": ram,
                        "disk": disk,
                    }
                },
                timeout=30,
            )
            if r.status_code != 200:
                raise RuntimeError(f"creating flavor {name} on Nova: {r.status_code} {r.text}")

    def hold(self, host: str, held: bool) -> None:
        """Stop (or continue) nova-compute of ``host``: what is cast to it waits in its queue."""
        assert self.sup is not None
        signal_group(self.sup.procs[f"compute-{host}"].pid, held)

    # -- readings -----------------------------------------------------------------
    def memory_mb(self) -> float:
        """The resident memory of every Nova and Placement process, gunicorn's workers included."""
        assert self.sup is not None
        total = 0
        for proc in self.sup.procs.values():
            for pid in _tree(proc.pid):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def unanswered(self) -> list[str]:
        """The calls Nova made that a stand-in had no answer for."""
        return [
            f"{s.name}: {call}" for s in (self.neutron, self.glance) if s for call in s.unanswered
        ]

    def logs(self) -> dict[str, str]:
        assert self.sup is not None
        return {
            p.stem: p.read_text(errors="replace") for p in sorted(self.sup.log_dir.glob("*.log"))
        }

    # -- stop ---------------------------------------------------------------------
    def close(self) -> None:
        """Stop every process, then drop the databases and the vhost."""
        if self.sup is not None:
            self.sup.stop_all(grace=20)
        for stand_in in (self.glance, self.neutron):
            if stand_in is not None:
                stand_in.stop()
        for url in self.databases.values():
            drop_database(self.pg_admin_url, url)
        self.databases.clear()
        if self.vhost:
            delete_vhost(self.vhost)
            self.vhost = ""


def signal_group(pid: int, held: bool) -> None:
    """SIGSTOP (held) or SIGCONT the process group ``pid`` leads (the supervisor starts
    each process in a session of its own), so a worker's pool stops with it."""
    os.killpg(pid, signal.SIGSTOP if held else signal.SIGCONT)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def main(argv: list[str]) -> int:
    """Start Nova as the tier does and keep it up until Ctrl-C (for poking at it by hand)."""
    from tests.support.stack import PG_ADMIN_URL, RABBITMQ_URL

    run = Path(argv[1] if len(argv) > 1 else "var/nova-conformance")
    nova = NovaDeployment(run, PG_ADMIN_URL, RABBITMQ_URL)
    try:
        nova.start()
        print(f"Nova is up at {nova.endpoint} after {nova.timings['start']:.1f}s", flush=True)
        print(f"memory: {nova.memory_mb():.0f} MB; logs in {run / 'logs'}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        nova.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))


__all__: list[Any] = ["NovaDeployment", "nova_available", "require_service", "signal_group"]
