"""Real Keystone, started on loopback for one test run, then removed.

OpenStack's clients ask the identity service things that resizeflow does not
answer: python-openstackclient's ``server migration list`` requires an
identity v3 service (openstacksdk's ``ensure_service_version(identity, '3')``)
before it sends anything to Nova's API. This is Keystone 30.0.0 itself, the
2026.2 release beside Nova 34, from Nova's virtualenv (``make nova-venv``).

A run's Keystone keeps everything in its own directory: its configuration, a
SQLite database, its fernet token and receipt keys and its log. ``start`` runs
``keystone-manage db_sync`` and ``fernet_setup`` (side by side), then
``bootstrap`` (an ``admin`` user with a password, project and role, region
``RegionOne``, and the identity service and endpoints) while Keystone's WSGI
application (``keystone.wsgi.api:application``) starts under gunicorn on a
free port of 127.0.0.1. :meth:`KeystoneDeployment.register` adds a service and
its endpoints to the catalog through Keystone's own API; :meth:`close` stops
the server and removes the directory. Every wait is bounded.
"""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from resizeflow.devstack.supervisor import Supervisor
from tests.conformance.nova import NOVA_VENV, _tree, free_port, require_service

REGION = "RegionOne"
ADMIN = "admin"
START_TIMEOUT = 120.0
MANAGE_TIMEOUT = 180.0


def keystone_available() -> str | None:
    """Why Keystone cannot run here, or None when Nova's virtualenv has it."""
    for exe in ("keystone-manage", "gunicorn"):
        if not (NOVA_VENV / "bin" / exe).exists():
            return f"{NOVA_VENV / 'bin' / exe} is missing: run `make nova-venv`"
    return None


def require_keystone() -> None:
    """Skip a test that needs real Keystone where it cannot run; in CI, fail it."""
    require_service(keystone_available(), "real Keystone")


@dataclass
class KeystoneDeployment:
    """One run's Keystone; :meth:`start` brings it up, :meth:`close` removes all of it."""

    run_dir: Path
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    port: int = 0
    sup: Supervisor | None = None
    made: bool = False  # the run's directory is ours to remove
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The identity v3 endpoint, as the catalog has it."""
        return f"http://127.0.0.1:{self.port}/v3"

    @property
    def log(self) -> Path:
        assert self.sup is not None
        return self.sup.log_path("keystone")

    # -- start ------------------------------------------------------------------
    def start(self) -> KeystoneDeployment:
        began = time.monotonic()
        self.run_dir = self.run_dir.resolve()
        self.run_dir.mkdir(parents=True)
        self.made = True
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "VIRTUAL_ENV"))}
        env["PATH"] = f"{NOVA_VENV / 'bin'}:{env.get('PATH', '')}"
        self.sup = Supervisor(self.run_dir, env, logs=self.run_dir / "logs")
        self._write_config()
        # The schema and the keys do not depend on each other.
        user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
        self._manage(
            ("db_sync",),
            ("fernet_setup", "--keystone-user", user, "--keystone-group", group),
        )
        self.timings["db_sync"] = time.monotonic() - began
        # The server reads the database per request: it starts while bootstrap fills it.
        self._start_wsgi()
        bootstrap = {
            "username": ADMIN,
            "project-name": ADMIN,
            "role-name": ADMIN,
            "service-name": "keystone",
            "region-id": REGION,
            "admin-url": self.url,
            "internal-url": self.url,
            "public-url": self.url,
        }
        args = [arg for key, value in bootstrap.items() for arg in (f"--bootstrap-{key}", value)]
        # The password goes in the environment, not on a command line others can read.
        self._manage(("bootstrap", *args), env={"OS_BOOTSTRAP_PASSWORD": self.password})
        self.sup.wait_until(
            "Keystone to answer", self._discovery_up, START_TIMEOUT, watch=("keystone",)
        )
        self.token()  # the bootstrapped admin can log in
        self.timings["start"] = time.monotonic() - began
        return self

    def _write_config(self) -> None:
        run = self.run_dir
        (run / "keystone.conf").write_text(
            f"""
[DEFAULT]
debug = false
use_stderr = true
[database]
connection = sqlite:///{run / "keystone.sqlite"}
[token]
provider = fernet
[fernet_tokens]
key_repository = {run / "fernet-keys"}
[fernet_receipts]
key_repository = {run / "fernet-receipts"}
[credential]
key_repository = {run / "credential-keys"}
[oslo_concurrency]
lock_path = {run / "lock"}
"""
        )

    def _manage(self, *commands: tuple[str, ...], env: dict[str, str] | None = None) -> None:
        """Run ``keystone-manage`` commands side by side; raise with the output of a failure."""
        assert self.sup is not None
        manage = str(NOVA_VENV / "bin" / "keystone-manage")
        conf = f"--config-file={self.run_dir / 'keystone.conf'}"
        procs = [
            (
                cmd,
                subprocess.Popen(
                    [manage, conf, *cmd],
                    env={**self.sup.env, **(env or {})},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    text=True,
                ),
            )
            for cmd in commands
        ]
        deadline = time.monotonic() + MANAGE_TIMEOUT
        failed = []
        for cmd, proc in procs:
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
                out += f"\n(killed after {MANAGE_TIMEOUT:.0f}s)"
            if proc.returncode != 0:
                failed.append(f"keystone-manage {cmd[0]} exited {proc.returncode}:\n{out[-3000:]}")
        if failed:
            raise RuntimeError("\n".join(failed))

    def _start_wsgi(self) -> None:
        """gunicorn with no arguments of its own: Keystone parses ``sys.argv`` as oslo.config's.

        Its access log goes to Keystone's log, so a test can see which requests reached it.
        """
        assert self.sup is not None
        home = self.run_dir / "wsgi"
        home.mkdir()
        (home / "gunicorn.conf.py").write_text(
            'wsgi_app = "keystone.wsgi.api:application"\n'
            f'bind = "127.0.0.1:{self.port}"\n'
            "workers = 1\n"
            'worker_class = "gthread"\n'
            "threads = 4\n"
            "timeout = 60\n"
            "graceful_timeout = 5\n"
            'accesslog = "-"\n'
            # No control socket: gunicorn's default is one shared path in the home directory.
            "control_socket_disable = True\n"
        )
        env = {
            "OS_KEYSTONE_CONFIG_DIR": str(self.run_dir),
            "OS_KEYSTONE_CONFIG_FILES": "keystone.conf",
        }
        gunicorn = NOVA_VENV / "bin" / "gunicorn"
        self.sup.spawn("keystone", ["/bin/sh", "-c", f"cd {home} && exec {gunicorn}"], env)

    def _discovery_up(self) -> bool:
        try:
            r = httpx.get(self.url, timeout=2)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    # -- the API ------------------------------------------------------------------
    def token(self) -> tuple[str, list[dict[str, Any]]]:
        """A project-scoped token of the bootstrapped admin, by password, and its catalog."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": ADMIN,
                            "domain": {"id": "default"},
                            "password": self.password,
                        }
                    },
                },
                "scope": {"project": {"name": ADMIN, "domain": {"id": "default"}}},
            }
        }
        r = httpx.post(f"{self.url}/auth/tokens", json=body, timeout=30)
        if r.status_code != 201:
            raise RuntimeError(f"Keystone refused the admin's password: {r.status_code} {r.text}")
        catalog: list[dict[str, Any]] = r.json()["token"]["catalog"]
        return r.headers["X-Subject-Token"], catalog

    def register(self, service_type: str, name: str, url: str) -> None:
        """Add a service to the catalog with public and internal endpoints at ``url``."""
        token, _ = self.token()
        headers = {"X-Auth-Token": token}
        r = httpx.post(
            f"{self.url}/services",
            headers=headers,
            json={"service": {"type": service_type, "name": name, "enabled": True}},
            timeout=30,
        )
        if r.status_code != 201:
            raise RuntimeError(f"creating service {name}: {r.status_code} {r.text}")
        service_id = r.json()["service"]["id"]
        for interface in ("public", "internal"):
            r = httpx.post(
                f"{self.url}/endpoints",
                headers=headers,
                json={
                    "endpoint": {
                        "service_id": service_id,
                        "interface": interface,
                        "url": url,
                        "region_id": REGION,
                        "enabled": True,
                    }
                },
                timeout=30,
            )
            if r.status_code != 201:
                raise RuntimeError(f"creating {interface} endpoint: {r.status_code} {r.text}")

    # -- readings -----------------------------------------------------------------
    def memory_mb(self) -> float:
        """The resident memory of gunicorn and its worker."""
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

    def requests(self, method: str, path: str) -> int:
        """How many ``method path`` requests Keystone's access log has."""
        needle = f'"{method} {path} HTTP/'
        return self.log.read_text(errors="replace").count(needle)

    # -- stop ---------------------------------------------------------------------
    def close(self, keep_logs: Path | None = None) -> None:
        """Stop the server and remove the run's directory (its log copied to ``keep_logs``)."""
        if self.sup is not None:
            self.sup.stop_all(grace=10)
            if keep_logs is not None and self.sup.log_dir.exists():
                shutil.rmtree(keep_logs, ignore_errors=True)
                shutil.copytree(self.sup.log_dir, keep_logs)
        if self.made:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def main(argv: list[str]) -> int:
    """Start Keystone as the tests do and keep it up until Ctrl-C (for poking at it by hand)."""
    run = Path(argv[1] if len(argv) > 1 else "var/keystone")
    keystone = KeystoneDeployment(run)
    try:
        keystone.start()
        print(f"Keystone is up at {keystone.url} after {keystone.timings['start']:.1f}s")
        print(f"admin's password: {keystone.password}; memory {keystone.memory_mb():.0f} MB")
        print(f"log: {keystone.log}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        keystone.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
