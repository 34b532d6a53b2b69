"""Compute hosts that share nothing, on one machine: one sshd per host.

Each host gets its own loopback address (127.0.0.11, .12, ...), its own sshd
with its own config and host key in a directory of its own, and its own
instances directory. Every key is generated here. The vm tests and
``resizeflow bench --hypervisor qemu`` run their hosts this way, so that a
resize between them copies its disks over SSH as between two machines.

All hosts listen on the same port, picked free at start, because a deployment
has one SSH port for all its hosts (``RESIZEFLOW_SSH_PORT``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from resizeflow.virt.remotefs.argv import SSHOptions
from resizeflow.virt.remotefs.base import RemoteHost

SSHD = "/usr/sbin/sshd"
TOOLS = ("ssh", "scp", "rsync", "ssh-keygen", "qemu-img", "qemu-io", "setpriv")
ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14")
_START_TIMEOUT = 10.0


def missing_tools() -> list[str]:
    """What this machine lacks to run hosts (``make hosts-deps`` installs it)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    return missing


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        timeout=30,
    )
    return path


def free_port(addresses: tuple[str, ...]) -> int:
    """A port free on every address at once (bounded tries)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        try:
            for addr in addresses[1:]:
                with socket.socket() as s:
                    s.bind((addr, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


@dataclass
class Host:
    """One compute host: a name, an address, an sshd, and its own directories."""

    name: str
    address: str
    port: int
    root: Path
    authorized_keys: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def instances(self) -> Path:
        return self.root / "instances"

    @property
    def image_cache(self) -> Path:
        return self.instances / "_base"

    @property
    def remote(self) -> RemoteHost:
        return RemoteHost(name=self.name, address=self.address)

    def rpath(self, *parts: str) -> PurePosixPath:
        """A path in this host's instances dir, as the remote side names it."""
        return PurePosixPath(self.instances, *parts)

    @property
    def log(self) -> Path:
        return self.root / "sshd.log"

    def write_config(self) -> Path:
        host_key = self.root / "ssh_host_ed25519_key"
        if not host_key.exists():
            keygen(host_key)
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.address}:{self.port}",
                    f"HostKey {host_key}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.authorized_keys}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    # The keys live in the hosts' own directory, not in a home dir.
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "MaxStartups 64:30:128",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        return config

    def start(self) -> None:
        assert self.proc is None, f"{self.name}'s sshd is already running"
        self.instances.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # sshd's privilege separation directory; .ci/run creates it too.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        config = self.write_config()
        with self.log.open("ab") as log:
            # -D: stays in the foreground, so this Popen is the daemon itself.
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"sshd for {self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd for {self.name} did not listen on {self.address}:{self.port}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Its connections first: each is a child sshd that would outlive the
        # listener, and a client sharing one (ControlMaster) would still get through.
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Hosts:
    """The test machine as several hosts, and the client side's key and known_hosts."""

    root: Path
    port: int
    key: Path
    hosts: list[Host]

    @property
    def known_hosts(self) -> Path:
        return self.root / "client" / "known_hosts"

    def ssh_options(self, **overrides: object) -> SSHOptions:
        values: dict[str, object] = {
            "key": self.key,
            "port": self.port,
            "known_hosts": self.known_hosts,
            "connect_timeout": 3.0,
        }
        values.update(overrides)
        return SSHOptions(**values)  # type: ignore[arg-type]

    def env(self, host: Host) -> dict[str, str]:
        """The settings of ``host``'s worker: its name, address, key and instances dir.

        ``{host}`` in the instances path makes every host's directory known to
        every other host, as Nova's one instances path on every host does.
        """
        return {
            "RESIZEFLOW_HOST": host.name,
            "RESIZEFLOW_MIGRATION_ADDRESS": host.address,
            "RESIZEFLOW_INSTANCES_PATH": f"{self.root}/{{host}}/instances",
            "RESIZEFLOW_SSH_KEY": str(self.key),
            "RESIZEFLOW_SSH_PORT": str(self.port),
            "RESIZEFLOW_SSH_KNOWN_HOSTS": str(self.known_hosts),
            "RESIZEFLOW_SSH_CONNECT_TIMEOUT": "3",
        }

    def add_host(self, name: str, address: str) -> Host:
        """Another host on the same port; started by the caller, stopped at teardown."""
        host = Host(
            name=name,
            address=address,
            port=self.port,
            root=self.root / name,
            authorized_keys=self.root / "client" / "authorized_keys",
        )
        host.root.mkdir(parents=True, exist_ok=True)
        self.hosts.append(host)
        return host

    def stop_all(self) -> None:
        for host in self.hosts:
            host.stop()


def start_hosts(root: Path, names: tuple[str, ...]) -> Hosts:
    """One sshd per named host, on ADDRESSES in order, with a fresh client key."""
    if missing := missing_tools():
        raise RuntimeError(f"missing {', '.join(missing)} (make hosts-deps)")
    client = root / "client"
    client.mkdir(parents=True)
    key = keygen(client / "id_ed25519")
    (client / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    last: Exception | None = None
    for _ in range(3):  # another process may take the port between pick and bind
        hosts = Hosts(root=root, port=free_port(ADDRESSES), key=key, hosts=[])
        try:
            for i, name in enumerate(names):
                hosts.add_host(name, ADDRESSES[i]).start()
            return hosts
        except RuntimeError as exc:
            hosts.stop_all()
            last = exc
    raise RuntimeError(f"could not start the test hosts: {last}")
