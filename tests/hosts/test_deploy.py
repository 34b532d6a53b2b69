"""The migration sshd of workers/systemd/ runs for real, from the unit's command
line and the sample sshd_config, with the keys ssh-keys.sh makes; the workers' SSH
client connects to it with the settings of the sample env files, through
resizeflow's own remote filesystem. The units themselves are checked in
tests/unit/test_deploy.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from resizeflow.conf import Settings
from resizeflow.errors import RemoteFilesystemError
from resizeflow.virt.remotefs.argv import ssh_options
from resizeflow.virt.remotefs.base import RemoteHost
from resizeflow.virt.remotefs.ssh import RsyncFilesystem
from tests.support.hosts import free_port, keygen, require_host_tools, require_root
from tests.unit.test_deploy import ETC, UNITS, env_file, expand, run_keys, unit

# Loopback addresses of their own, apart from tests/support/hosts.py's 127.0.0.11-14.
ADDRESSES = ("127.0.0.21", "127.0.0.22")


class MigrationHost:
    """One host's migration sshd, started from the unit's own ExecStart."""

    def __init__(self, etc: Path, env: dict[str, str], name: str) -> None:
        self.etc, self.env, self.name = etc, env, name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        service = unit("resizeflow-migration-sshd@.service")["Service"]
        (command,) = service["ExecStart"]
        argv = [a.replace(ETC, str(self.etc)) for a in expand(command, self.env, self.name)]
        # The keys live under pytest's tmp dirs, whose /tmp parent is world-writable.
        argv += ["-o", "StrictModes=no"]
        log = self.etc / "sshd.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        address = (self.env["RESIZEFLOW_MIGRATION_ADDRESS"], int(self.env["RESIZEFLOW_SSH_PORT"]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()[-2000:]
            try:
                with socket.create_connection(address, timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.name}'s sshd did not listen: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def migration_hosts(tmp_path: Path) -> Iterator[tuple[Path, list[MigrationHost]]]:
    """Two hosts laid out as the docs install them, /etc/resizeflow under tmp_path."""
    require_host_tools()
    require_root("the migration sshd")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port(ADDRESSES)
    names = ("compute-1", "compute-2")
    keys = tmp_path / "keys"
    run_keys(keys, port, *(f"{n}={a}" for n, a in zip(names, ADDRESSES, strict=True)))
    shared = env_file(UNITS / "resizeflow.env.example")
    hosts = []
    for name, address in zip(names, ADDRESSES, strict=True):
        etc = tmp_path / name / "etc"
        etc.mkdir(parents=True)
        config = (UNITS / "sshd_config").read_text().replace(ETC, str(etc))
        (etc / "sshd_config").write_text(config)
        shutil.copytree(keys / "deployment", etc / "ssh")
        shutil.copytree(keys / name, etc / "ssh-host")
        env = {
            **shared,
            "RESIZEFLOW_SSH_PORT": str(port),
            "RESIZEFLOW_MIGRATION_ADDRESS": address,
            "RESIZEFLOW_HOST": name,
        }
        hosts.append(MigrationHost(etc, env, name))
    try:
        for host in hosts:
            host.start()
        yield tmp_path, hosts
    finally:
        for host in hosts:
            host.stop()


def worker_settings(host: MigrationHost) -> Settings:
    env = {k: v.replace(ETC, str(host.etc)) for k, v in host.env.items()}
    return Settings.from_env(env, state_dir=host.etc.parent / "state")


@pytest.mark.hosts
def test_migration_sshd_takes_the_deployment_key_and_only_it(
    migration_hosts: tuple[Path, list[MigrationHost]],
) -> None:
    tmp, (one, two) = migration_hosts
    settings = worker_settings(one)
    fs = RsyncFilesystem(ssh_options(settings))
    peer = RemoteHost(name=two.name, address=two.env["RESIZEFLOW_MIGRATION_ADDRESS"])
    # compute-1's worker copies a disk to compute-2 and runs a command there.
    disk = tmp / "disk"
    disk.write_bytes(os.urandom(64 * 1024))
    dest = PurePosixPath(tmp / "compute-2" / "instances" / "uuid" / "disk")
    result = fs.copy_file(disk, peer, dest)
    assert result.size == 64 * 1024
    assert Path(dest).read_bytes() == disk.read_bytes()
    assert fs.execute(peer, ["id", "-un"]).strip() == "root"
    # known_hosts was complete beforehand: nothing was pinned on the way.
    assert settings.ssh_strict_host_key_checking == "yes"
    before = (one.etc / "ssh" / "known_hosts").read_text()
    assert settings.known_hosts_file.read_text() == before

    # A key that is not the deployment's gets nowhere.
    stranger = keygen(tmp / "stranger")
    other = RsyncFilesystem(ssh_options(replace(settings, ssh_key=str(stranger))))
    with pytest.raises(RemoteFilesystemError, match="SSH refused"):
        other.execute(peer, ["true"])
    # A host whose key is not the one pinned for its address is refused too:
    # compute-2's address, with compute-1's pin in its place.
    lying = tmp / "lying_known_hosts"
    pins = before.splitlines()
    lying.write_text(f"{pins[1].split()[0]} {' '.join(pins[0].split()[1:])}\n")
    fooled = RsyncFilesystem(ssh_options(replace(settings, ssh_known_hosts=str(lying))))
    with pytest.raises(RemoteFilesystemError, match="SSH refused"):
        fooled.execute(peer, ["true"])
