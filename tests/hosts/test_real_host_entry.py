"""compose's real-hosts profile: a host's container entry, workers/real-host.sh, run for real.

The entry makes sure libvirtd answers, starts the migration sshd with the
project's sshd_config on the host's migration address and SSH port, and execs
the host's worker with the service's arguments. Here it runs as a process, as
compose's ``qemu-1`` service runs it, with the keys the ``ssh-keys`` one-shot
makes; /etc/resizeflow is a directory under tmp_path, the address a loopback
address of its own, and the worker drives libvirt's test driver on a Redis key
prefix and a SQLite file of its own.

The entry starts the system libvirtd when none answers, which a test must not
do to the machine: it needs one running already (``make libvirtd``; .ci/run
starts it before ``make test``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.devstack import libvirtd
from resizeflow.devstack.stack import TEST_DRIVER_ENV
from resizeflow.virt.remotefs.argv import ssh_options
from resizeflow.virt.remotefs.base import RemoteHost
from resizeflow.virt.remotefs.ssh import RsyncFilesystem
from tests.functional.test_compose import BIN, ROOT, compose_services
from tests.support.hosts import free_port, require_host_tools, require_root
from tests.support.stack import REDIS_URL, require, wait_for
from tests.unit.test_deploy import ETC, UNITS, run_keys

ADDRESS = "127.0.0.23"  # apart from tests/support/hosts.py's and test_deploy's addresses
HOST = "qemu-1"


def require_libvirtd() -> None:
    if libvirtd.running():
        return
    why = "the real-host entry starts the system libvirtd when none answers: run `make libvirtd`"
    if os.environ.get("CI"):
        pytest.fail(f"{why}, as .ci/run does before `make test`")
    pytest.skip(why)


def sshd_pids(config: Path) -> list[int]:
    """The sshd processes started with ``config`` (the entry's sshd detaches)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # sshd's listener rewrites its title: "sshd: /usr/sbin/sshd -f CONFIG ... [listener]".
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        sshd = cmdline.startswith(b"sshd") or b"/sshd\0" in cmdline
        if sshd and str(config).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def etc(tmp_path: Path) -> Iterator[Path]:
    """/etc/resizeflow of the host, laid out as the profile mounts it; its sshd stopped after."""
    require_host_tools()
    require_root("the real-host entry's sshd")
    require_libvirtd()
    require(REDIS_URL, 6379, "Redis")
    etc = tmp_path / "etc"
    etc.mkdir()
    port = free_port((ADDRESS,))
    keys = tmp_path / "keys"
    run_keys(keys, port, f"{HOST}={ADDRESS}")
    shutil.copytree(keys / "deployment", etc / "ssh")
    shutil.copytree(keys / HOST, etc / "ssh-host")
    # The keys live under pytest's tmp dirs, whose /tmp parent is world-writable.
    config = (UNITS / "sshd_config").read_text().replace(ETC, str(etc))
    (etc / "sshd_config").write_text(config + "StrictModes no\n")
    (etc / "port").write_text(str(port))
    try:
        yield etc
    finally:
        for pid in sshd_pids(etc / "sshd_config"):
            os.kill(pid, signal.SIGTERM)


def test_the_entry_starts_the_migration_sshd_then_execs_the_worker(
    etc: Path, tmp_path: Path
) -> None:
    service = compose_services()[HOST]
    argv = [str(a) for a in service["command"]]
    assert argv[0] == "resizeflow-real-host"  # the image installs workers/real-host.sh so
    env = {k: str(v).replace(ETC, str(etc)) for k, v in service["environment"].items()}
    assert env["RESIZEFLOW_LIBVIRT_URI"] == "qemu:///system"
    # The image's commands: resizeflow-worker is workers/entrypoint.sh.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "resizeflow-worker").symlink_to(ROOT / "workers" / "entrypoint.sh")
    env |= {
        **TEST_DRIVER_ENV,  # the worker drives libvirt's test driver, not this machine's
        "RESIZEFLOW_DATABASE_URL": "",  # SQLite in the state dir
        "RESIZEFLOW_BROKER_URL": REDIS_URL,
        "RESIZEFLOW_BROKER_PREFIX": f"rf-real-host-{uuid.uuid4().hex[:8]}:",
        "RESIZEFLOW_STATE_DIR": str(tmp_path / "state"),
        "RESIZEFLOW_MIGRATION_ADDRESS": ADDRESS,
        "RESIZEFLOW_SSH_PORT": (etc / "port").read_text(),
        "RESIZEFLOW_SSHD_CONFIG": str(etc / "sshd_config"),
    }
    env = {**os.environ, "PATH": f"{bin_dir}:{BIN}:{os.environ['PATH']}", **env}
    upgrade = subprocess.run(
        [sys.executable, "-m", "resizeflow", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    settings = Settings.from_env(env)
    app = make_app(settings)
    log = tmp_path / "entry.log"
    with log.open("wb") as out:
        entry = subprocess.Popen(
            [str(ROOT / "workers" / "real-host.sh"), *argv[1:]],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def worker_up() -> bool:
            assert entry.poll() is None, log.read_text()[-3000:]
            replies = app.control.ping(timeout=0.5) or []
            return any(node.startswith(f"{HOST}-") for reply in replies for node in reply)

        wait_for(worker_up, 90, "the host's worker to answer a ping")
        # The entry became the worker (exec), with the service's arguments.
        cmdline = Path(f"/proc/{entry.pid}/cmdline").read_bytes().decode().split("\0")
        assert cmdline[-5:-1] == ["worker", "--host", HOST, "--register"], cmdline
        assert "libvirtd already running" in log.read_text()
        # Its migration sshd answers on the host's address and port, with the host key
        # the other hosts pinned, and lets the deployment's key in.
        fs = RsyncFilesystem(ssh_options(settings))
        peer = RemoteHost(name=HOST, address=ADDRESS)
        assert fs.execute(peer, ["id", "-un"]).strip() == "root"
        assert len(sshd_pids(etc / "sshd_config")) >= 1
    finally:
        entry.terminate()
        try:
            entry.wait(timeout=60)
        except subprocess.TimeoutExpired:
            entry.kill()
            entry.wait()
