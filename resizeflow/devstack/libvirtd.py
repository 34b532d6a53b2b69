"""Start the system libvirtd (``qemu:///system``) when none is running, configured to work here.

Debian bookworm ships the monolithic ``libvirtd`` only. Without systemd it is
started as ``libvirtd -d``; the settings it needs in ``/etc/libvirt/qemu.conf``
are added when missing and never overwritten, so an operator's own
configuration wins.

Run ``python -m resizeflow.devstack.libvirtd`` as root. With ``--prepare``
it only makes the host ready (the account, qemu.conf, the directories) and
starts nothing: systemd's ``resizeflow-libvirtd.service`` runs that first and
then libvirtd itself in the foreground (workers/systemd/).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from resizeflow.errors import ConfigError

SOCKET = Path("/run/libvirt/libvirt-sock")
QEMU_CONF = Path("/etc/libvirt/qemu.conf")
# NOTE: why each setting matters on these machines:
# - user/group root: otherwise every define re-probes /dev/kvm (mode 0600) as
#   the libvirt-qemu user, which took 30-40 s each time;
# - stdio_handler "file": without a running virtlogd, create() fails on its socket;
# - no security driver and no cgroups: containers here have neither.
QEMU_SETTINGS = {
    "user": '"root"',
    "group": '"root"',
    "stdio_handler": '"file"',
    "security_driver": '"none"',
    "cgroup_controllers": "[ ]",
}


def running(path: Path = SOCKET) -> bool:
    """True when a libvirtd answers on its system socket."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _ensure_account() -> None:
    # The QEMU driver refuses to load without its account, even when guests run as root.
    try:
        grp.getgrnam("libvirt-qemu")
    except KeyError:
        subprocess.run(["groupadd", "--system", "libvirt-qemu"], check=True)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "-g",
                "libvirt-qemu",
                "-d",
                "/var/lib/libvirt",
                "-s",
                "/usr/sbin/nologin",
                "libvirt-qemu",
            ],
            check=True,
        )


def configure(conf: Path = QEMU_CONF) -> list[str]:
    """Add the settings libvirtd's QEMU driver needs here; returns the keys it added."""
    conf.parent.mkdir(parents=True, exist_ok=True)
    text = conf.read_text() if conf.exists() else ""
    added = []
    for key, value in QEMU_SETTINGS.items():
        if not re.search(rf"^\s*{key}\s*=", text, re.MULTILINE):
            text += f"{'' if not text or text.endswith(chr(10)) else chr(10)}{key} = {value}\n"
            added.append(key)
    if added:
        conf.write_text(text)
    return added


def prepare() -> str:
    """Make this host ready for libvirtd (as root); the daemon's path."""
    if os.geteuid() != 0:
        raise ConfigError("only root can prepare libvirtd")
    daemon = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
    if not Path(daemon).exists():
        raise ConfigError("libvirtd is not installed; run `make vm-deps`")
    _ensure_account()
    configure()
    for directory in ("/run/libvirt", "/var/lib/libvirt/qemu", "/var/log/libvirt/qemu"):
        Path(directory).mkdir(parents=True, exist_ok=True)
    return daemon


def ensure_running(timeout: float = 30.0) -> bool:
    """Start libvirtd unless one is running; True if this call started it."""
    if running():
        return False
    if os.geteuid() != 0:
        raise ConfigError("libvirtd is not running, and only root can start it")
    daemon = prepare()
    subprocess.run([daemon, "-d"], check=True)
    deadline = time.monotonic() + timeout
    while not running():
        if time.monotonic() > deadline:
            raise ConfigError(f"libvirtd did not answer on {SOCKET} within {timeout:.0f}s")
        time.sleep(0.2)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--prepare"]:
        prepare()
        print("libvirtd prepared")
        return 0
    if args:
        print("usage: python -m resizeflow.devstack.libvirtd [--prepare]", file=sys.stderr)
        return 2
    started = ensure_running()
    print("libvirtd started" if started else "libvirtd already running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
