"""compose.yaml, run as plain processes: the same commands and settings, on this machine.

No Docker engine runs here, so the test reads compose.yaml, points its
PostgreSQL and Redis at the machine's own (a fresh database and key prefix),
and starts each service's command the way compose would, in dependency order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.stack import (
    PG_ADMIN_URL,
    REDIS_URL,
    create_pg_database,
    drop_pg_database,
    require,
    service_up,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
STARTED_AFTER_UPGRADE = ("api", "beat", "compute-1", "compute-2")
# Waits for Redis only: it keeps no rows of its own.
STARTED_WITH_REDIS = ("storage",)


def compose_services() -> dict[str, Any]:
    text = (ROOT / "compose.yaml").read_text()
    # ${VAR:-default} as compose substitutes it, from this environment.
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), text)
    return dict(yaml.safe_load(text)["services"])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def localize(
    service: dict[str, Any], db_url: str, prefix: str, state: Path, storage_port: int
) -> dict[str, str]:
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    assert env["RESIZEFLOW_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["RESIZEFLOW_BROKER_URL"].startswith("redis://redis:6379")
    env.update(
        RESIZEFLOW_DATABASE_URL=db_url,
        RESIZEFLOW_BROKER_URL=REDIS_URL,
        RESIZEFLOW_BROKER_PREFIX=prefix,
        RESIZEFLOW_STATE_DIR=str(state),
        RESIZEFLOW_NODE_VCPUS="16",
        RESIZEFLOW_NODE_MEMORY_MB="65536",
        RESIZEFLOW_NODE_LOCAL_GB="1000",
        RESIZEFLOW_REPORT_INTERVAL="1",
        RESIZEFLOW_STORAGE_ADDRESS="127.0.0.1",
        RESIZEFLOW_STORAGE_PORT=str(storage_port),
    )
    if "RESIZEFLOW_STORAGE_BIND" in env:
        env["RESIZEFLOW_STORAGE_BIND"] = "127.0.0.1"
    return {**os.environ, "PATH": f"{BIN}:{ROOT / 'workers'}:{os.environ['PATH']}", **env}


def command(service: dict[str, Any], api_port: int) -> list[str]:
    argv = [str(a) for a in service["command"]]
    if argv[0] == "resizeflow-worker":  # the image installs workers/entrypoint.sh under this name
        argv[0] = str(ROOT / "workers" / "entrypoint.sh")
    return [str(api_port) if a == "8774" else a for a in argv]


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/v2.1"

    def call(self, method: str, path: str, body: Any = None, base: str = "") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request((base or self.base) + path, data=data, method=method)
        req.add_header("X-Auth-Token", "admin:admin")
        # 2.47 embeds the flavor in a server, as modern clients expect.
        req.add_header("OpenStack-API-Version", "compute 2.47")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def server(self, sid: str) -> dict[str, Any]:
        code, body = self.call("GET", f"/servers/{sid}")
        assert code == 200, body
        return dict(body["server"])

    def wait_status(self, sid: str, status: str) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            srv = self.server(sid)
            assert srv["status"] != "ERROR", srv
            return srv if srv["status"] == status and not srv["OS-EXT-STS:task_state"] else None

        return wait_for(ready, 60, f"{sid} to be {status}")


@pytest.fixture
def compose_stack(tmp_path: Path) -> Any:
    require(REDIS_URL, 6379, "Redis")
    require(PG_ADMIN_URL, 5432, "PostgreSQL")
    services = compose_services()
    db_url = create_pg_database()
    prefix = f"rf-compose-{uuid.uuid4().hex[:8]}:"
    api_port = free_port()
    storage_port = free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        upgrade = services["db-upgrade"]
        done = subprocess.run(
            command(upgrade, api_port),
            env=localize(upgrade, db_url, prefix, tmp_path, storage_port),
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr.decode()
        for name in STARTED_AFTER_UPGRADE + STARTED_WITH_REDIS:
            svc = services[name]
            # Every one waits for what it needs, as compose orders it.
            if name in STARTED_AFTER_UPGRADE:
                upgraded = svc["depends_on"]["db-upgrade"]["condition"]
                assert upgraded == "service_completed_successfully"
            assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
            with open(logs / f"{name}.log", "ab") as log:
                procs[name] = subprocess.Popen(
                    command(svc, api_port),
                    env=localize(svc, db_url, prefix, tmp_path, storage_port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        api = Api(api_port)

        def up() -> bool:
            for name, proc in procs.items():
                assert proc.poll() is None, (logs / f"{name}.log").read_text()[-3000:]
            if not service_up(f"http://127.0.0.1:{api_port}", api_port):
                return False
            code, body = api.call("GET", "/os-services")
            return code == 200 and sum(s["state"] == "up" for s in body["services"]) == 2

        wait_for(up, 90, "the compose services")
        yield api
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_pg_database(db_url)


def test_compose_commands_run_a_confirm_and_a_revert(compose_stack: Any) -> None:
    api = compose_stack
    ids = []
    for name in ("kept", "undone"):
        code, body = api.call(
            "POST", "/servers", {"server": {"name": name, "flavorRef": "1", "networks": "none"}}
        )
        assert code == 202, body
        ids.append(body["server"]["id"])
    for sid in ids:
        api.wait_status(sid, "ACTIVE")
        code, body = api.call("POST", f"/servers/{sid}/action", {"resize": {"flavorRef": "2"}})
        assert code == 202, body
    for sid in ids:
        api.wait_status(sid, "VERIFY_RESIZE")
    kept, undone = ids
    assert api.call("POST", f"/servers/{kept}/action", {"confirmResize": None})[0] == 204
    assert api.call("POST", f"/servers/{undone}/action", {"revertResize": None})[0] == 202
    assert api.wait_status(kept, "ACTIVE")["flavor"]["original_name"] == "m1.small"
    assert api.wait_status(undone, "ACTIVE")["flavor"]["original_name"] == "m1.tiny"
    code, body = api.call("GET", "/os-migrations")
    statuses = {m["instance_uuid"]: m["status"] for m in body["migrations"]}
    assert statuses == {kept: "confirmed", undone: "reverted"}


def test_compose_storage_host_serves_volumes(compose_stack: Any) -> None:
    api = compose_stack
    volumes = api.base.removesuffix("/v2.1") + "/volume/v3"
    code, body = api.call("POST", "/volumes", {"volume": {"size": 1, "name": "c"}}, volumes)
    assert code == 202, body
    assert body["volume"]["status"] == "available"
    vid = body["volume"]["id"]
    code, body = api.call("DELETE", f"/volumes/{vid}", None, volumes)
    assert code == 202, body
    assert api.call("GET", f"/volumes/{vid}", None, volumes)[0] == 404


def test_compose_file_is_valid() -> None:
    import shutil

    if shutil.which("docker-compose") is None:
        if os.environ.get("CI"):
            pytest.fail("CI validates compose.yaml with docker-compose, which is missing")
        pytest.skip("docker-compose is not installed")
    for profile in ([], ["--profile", "real-hosts"]):
        done = subprocess.run(
            ["docker-compose", *profile, "config", "-q"], cwd=ROOT, capture_output=True, timeout=60
        )
        assert done.returncode == 0, (profile, done.stderr.decode())


# --- the real-hosts profile -------------------------------------------------------
REAL_HOSTS = ("qemu-1", "qemu-2")


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """A service's named volumes: container path -> (volume, read-only)."""
    found = {}
    for spec in service.get("volumes", []):
        volume, path, *mode = spec.split(":")
        found[path] = (volume, mode == ["ro"])
    return found


def test_real_hosts_profile_is_apart_from_the_default_stack() -> None:
    services = compose_services()
    profiled = {name for name, svc in services.items() if svc.get("profiles")}
    assert profiled == {"ssh-keys", *REAL_HOSTS}
    for name in profiled:
        assert services[name]["profiles"] == ["real-hosts"]
    # The default stack's services are what they were: simulated hosts on test:///.
    for name in ("compute-1", "compute-2"):
        env = services[name]["environment"]
        assert env["RESIZEFLOW_LIBVIRT_URI"] == "test:///default"
        # Each mounts its peer's instances dir, so a local copy reaches it.
        assert env["RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT"] == "local"
    # `make up-real-hosts` leaves out every simulated host, which compose would
    # otherwise start beside the real ones (no profile means always).
    make = subprocess.run(
        ["make", "-s", "-n", "up-real-hosts", "COMPOSE=compose"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert make.returncode == 0, make.stderr
    argv = make.stdout.split()
    assert argv[:3] == ["compose", "--profile", "real-hosts"]
    scaled = {argv[i + 1] for i, a in enumerate(argv) if a == "--scale"}
    simulated = {
        name
        for name, svc in services.items()
        if not svc.get("profiles") and svc.get("command", [""])[0] == "resizeflow-worker"
    }
    assert simulated and {f"{name}=0" for name in simulated} == scaled


def test_real_hosts_each_keep_their_own_instances_and_host_key() -> None:
    services = compose_services()
    instance_volumes = {}
    for name in REAL_HOSTS:
        svc = services[name]
        env = svc["environment"]
        assert env["RESIZEFLOW_HOST"] == name
        assert env["RESIZEFLOW_LIBVIRT_URI"] == "qemu:///system"
        # Disks cross over SSH (rsync unless set otherwise), never by a local copy.
        assert env.get("RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT", "rsync") in ("rsync", "scp")
        assert svc["privileged"] is True and svc["user"] == "root"
        assert svc["build"]["target"] == "real-host"
        assert svc["depends_on"]["ssh-keys"]["condition"] == "service_completed_successfully"
        own = mounts(svc)
        path = f"{env['RESIZEFLOW_STATE_DIR']}/{name}/instances"
        volume, read_only = own[path]
        assert not read_only
        instance_volumes[name] = volume
        # No other host's instances dir: disks cross between them over SSH.
        for other in REAL_HOSTS:
            if other != name:
                assert not any(f"/{other}/" in p for p in own), own
        # The deployment's keys are read-only here; the sshd host key too.
        assert own[str(Path(env["RESIZEFLOW_SSH_KEY"]).parent)][1]
        assert own[str(Path(env["RESIZEFLOW_SSH_KNOWN_HOSTS"]).parent)][1]
        assert own["/etc/resizeflow/ssh-host"][1]
    assert len(set(instance_volumes.values())) == len(REAL_HOSTS)
    for name, svc in services.items():
        vols = {v for v, _ in mounts(svc).values()}
        for host, volume in instance_volumes.items():
            assert volume not in vols or name == host, (name, volume)
        host_keys = {v for v in vols if v.startswith("ssh-host-")}
        assert name in ("ssh-keys", *REAL_HOSTS) or not host_keys
        if name in REAL_HOSTS:
            assert len(host_keys) == 1


def test_real_hosts_ssh_keys_one_shot_makes_what_the_hosts_read(tmp_path: Path) -> None:
    """The one-shot's command, run as a process; volumes are directories under tmp_path."""
    import shutil

    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    services = compose_services()
    oneshot = services["ssh-keys"]
    assert oneshot["restart"] == "no"
    argv = [str(a) for a in oneshot["command"]]
    assert argv[0] == "resizeflow-ssh-keys"  # the image installs workers/ssh-keys.sh so
    out = argv[1]
    volumes = tmp_path / "volumes"

    def volume_dir(volume: str) -> Path:
        path = volumes / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    # Run it in a directory whose subdirectories are the volumes it mounts.
    root = tmp_path / "oneshot"
    for path, (volume, _) in mounts(oneshot).items():
        rel = Path(path).relative_to(out)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(volume_dir(volume))
    run = [str(ROOT / "workers" / "ssh-keys.sh"), str(root), *argv[2:]]
    for _ in range(2):  # a restarted stack runs it again: nothing changes
        done = subprocess.run(run, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        if _ == 0:
            first = {p: p.read_bytes() for p in volumes.rglob("*") if p.is_file()}
    assert {p: p.read_bytes() for p in volumes.rglob("*") if p.is_file()} == first

    sshd_config = (ROOT / "workers" / "systemd" / "sshd_config").read_text()
    host_key = re.search(r"^HostKey (\S+)", sshd_config, re.M)
    authorized = re.search(r"^AuthorizedKeysFile (\S+)", sshd_config, re.M)
    assert host_key and authorized
    for name in REAL_HOSTS:
        svc = services[name]
        env = svc["environment"]
        own = mounts(svc)

        def seen(path: str, own: dict[str, tuple[str, bool]] = own) -> Path:
            """The file at ``path`` in the container, through its volumes."""
            mount = max((m for m in own if path.startswith(m + "/")), key=len)
            return volumes / own[mount][0] / Path(path).relative_to(mount)

        key = seen(env["RESIZEFLOW_SSH_KEY"])
        assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        assert key.stat().st_mode & 0o077 == 0
        pub = Path(f"{key}.pub").read_text().split()[:2]
        assert seen(authorized.group(1)).read_text().split()[:2] == pub
        # The host's sshd key is pinned under the address its peers dial: its
        # migration address, by default its host name.
        address = env.get("RESIZEFLOW_MIGRATION_ADDRESS") or env["RESIZEFLOW_HOST"]
        port = int(env["RESIZEFLOW_SSH_PORT"])
        pinned = address if port == 22 else f"[{address}]:{port}"
        pins = dict(
            line.split(" ", 1)
            for line in seen(env["RESIZEFLOW_SSH_KNOWN_HOSTS"]).read_text().splitlines()
        )
        host_pub = Path(f"{seen(host_key.group(1))}.pub").read_text().split()[:2]
        assert pins[pinned].split() == host_pub


def test_entries_refuse_to_start_without_their_host() -> None:
    """Each host's entry names the setting it lacks, in one line, before starting anything.

    Each is run for real elsewhere: entrypoint.sh by the compose stack above,
    ssh-keys.sh by the one-shot test above, real-host.sh in tests/hosts/.
    """
    env = {k: v for k, v in os.environ.items() if k != "RESIZEFLOW_HOST"}
    for script, what in (
        ("entrypoint.sh", "the compute host this worker serves"),
        ("real-host.sh", "the compute host this container is"),
    ):
        done = subprocess.run(
            [str(ROOT / "workers" / script), "--register"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, script
        assert done.stdout == "", (script, done.stdout)
        (line,) = done.stderr.splitlines()
        assert line.endswith(f"RESIZEFLOW_HOST: set RESIZEFLOW_HOST to {what}"), (script, line)


def dockerfile_stages() -> dict[str, list[str]]:
    """workers/Dockerfile's stages by name, each as its instruction lines (continuations joined)."""
    text = (ROOT / "workers" / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            words = line.split()
            lines = stages.setdefault(words[-1] if "AS" in words else words[1], [])
        lines.append(line)
    return stages


def test_image_targets_install_what_compose_runs() -> None:
    stages = dockerfile_stages()
    services = compose_services()
    # The default build (no target) is the last stage: the base image, unchanged.
    last = list(stages)[-1]
    assert stages[last] == [f"FROM base AS {last}"]
    for name, svc in services.items():
        if "build" not in svc:
            continue
        target = svc["build"].get("target")
        assert target is None or target in stages, (name, target)
        # Each stage builds on the one before it; what it runs is installed in it.
        lines = [*stages["base"], *(stages[target] if target else [])]
        installed = {
            line.split()[-1].rsplit("/", 1)[-1] for line in lines if line.startswith("COPY ")
        }
        command = str(svc.get("command", ["resizeflow-worker"])[0])
        assert command == "resizeflow" or command in installed, (name, command)
        for line in lines:
            if line.startswith("COPY ") and "--from" not in line:
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), (name, src)
    # The real-host target has the Makefile's packages for real guests and disk copies.
    make = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    wanted = set()
    for var in ("VM_APT_PACKAGES", "HOSTS_APT_PACKAGES"):
        found = re.search(rf"^{var} := (.*)$", make, re.M)
        assert found, var
        wanted |= set(found.group(1).split())
    apt = " ".join(line for line in stages["real-host"] if "apt-get install" in line).split()
    # busybox-static only builds the test guest, which the real hosts do not.
    assert wanted - {"busybox-static"} <= set(apt), sorted(wanted - set(apt))
