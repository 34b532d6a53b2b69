"""Whether other hosts can reach this host's migration address over SSH.

A worker checks it at its start (see :mod:`resizeflow.worker`), so that a
host advertising an address nobody can resolve, or a port where no sshd
answers, says so then, not at the first resize to it.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

MIGRATION_ADDRESS, SSH_PORT = "RESIZEFLOW_MIGRATION_ADDRESS", "RESIZEFLOW_SSH_PORT"


@dataclass(frozen=True)
class Unreachable:
    """Why other hosts could not SSH to an address: what failed, and the setting to look at."""

    problem: str
    settings: tuple[str, ...]


def probe_ssh(address: str, port: int, timeout: float) -> Unreachable | None:
    """Whether ``address`` resolves and an sshd greets on ``port``, within ``timeout`` seconds.

    A TCP connection and the server's ``SSH-`` greeting, no login: the key
    and the host key are checked by every copy, and named by its error.
    """
    found: list[Unreachable | None] = []
    thread = threading.Thread(
        target=lambda: found.append(_probe_ssh(address, port, timeout)),
        name="resizeflow-ssh-probe",
        daemon=True,  # NOTE: a resolver that hangs must not hold the worker's exit
    )
    thread.start()
    # Every socket call is bounded by the deadline; only the resolver is not.
    thread.join(timeout + 0.5)
    if found:
        return found[0]
    return Unreachable(
        f"resolving {address} did not finish within {timeout:g}s", (MIGRATION_ADDRESS,)
    )


def _probe_ssh(address: str, port: int, timeout: float) -> Unreachable | None:
    end = time.monotonic() + timeout
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Unreachable(f"{address} does not resolve ({reason})", (MIGRATION_ADDRESS,))
    failures: list[str] = []
    for family, kind, proto, _name, sockaddr in infos:
        ip = sockaddr[0]
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(max(0.01, end - time.monotonic()))
                sock.connect(sockaddr)
                greeting = _first_line(sock, end)
        except TimeoutError:
            failures.append(f"{ip}: no answer within {timeout:g}s")
            continue
        except OSError as exc:
            failures.append(f"{ip}: {exc.strerror or exc}")
            continue
        if greeting.startswith(b"SSH-"):
            return None
        said = (
            f"it said {greeting[:40].decode('ascii', 'replace')!r}"
            if greeting
            else f"no greeting within {timeout:g}s"
        )
        return Unreachable(
            f"{address} port {port} accepts connections, but not as an SSH server ({said})",
            (SSH_PORT,),
        )
    return Unreachable(
        f"no SSH server answers at {address} port {port} ({'; '.join(failures)})",
        (MIGRATION_ADDRESS, SSH_PORT),
    )


def _first_line(sock: socket.socket, end: float) -> bytes:
    """The server's first line (an sshd greets first), or what came before the deadline."""
    data = b""
    while b"\n" not in data and len(data) < 255:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(255 - len(data))
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].rstrip(b"\r")
