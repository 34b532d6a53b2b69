"""A worker whose disks move over SSH says at start, in one line, when other
hosts could not reach its own migration address, and which setting fixes it."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from resizeflow import worker
from resizeflow.conf import Settings
from resizeflow.virt.remotefs import address as remotefs
from resizeflow.virt.remotefs.address import MIGRATION_ADDRESS, SSH_PORT, probe_ssh

# A name that never resolves (RFC 2606).
NOWHERE = "rf-nowhere.invalid"


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that greets each connection with the next of a list."""
    greetings: list[bytes] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            held.append(conn)  # kept open: a silent server stays silent
            if greetings:
                conn.sendall(greetings.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], greetings
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.fast
def test_an_sshd_that_greets_is_reachable(server: tuple[int, list[bytes]]) -> None:
    port, greetings = server
    greetings.append(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    assert probe_ssh("127.0.0.1", port, 3.0) is None
    greetings.append(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    assert probe_ssh("localhost", port, 3.0) is None


@pytest.mark.fast
def test_a_name_that_does_not_resolve() -> None:
    found = probe_ssh(NOWHERE, 22, 3.0)
    assert found is not None
    assert found.problem.startswith(f"{NOWHERE} does not resolve (")
    assert found.settings == (MIGRATION_ADDRESS,)


@pytest.mark.fast
def test_nothing_listening() -> None:
    port = free_port()
    found = probe_ssh("127.0.0.1", port, 3.0)
    assert found is not None
    assert found.problem == (
        f"no SSH server answers at 127.0.0.1 port {port} (127.0.0.1: Connection refused)"
    )
    assert found.settings == (MIGRATION_ADDRESS, SSH_PORT)


@pytest.mark.fast
def test_something_else_listening(server: tuple[int, list[bytes]]) -> None:
    port, greetings = server
    greetings.append(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    found = probe_ssh("127.0.0.1", port, 3.0)
    assert found is not None
    assert found.problem == (
        f"127.0.0.1 port {port} accepts connections, but not as an SSH server "
        "(it said 'HTTP/1.1 400 Bad Request')"
    )
    assert found.settings == (SSH_PORT,)


@pytest.mark.fast
def test_a_silent_server_is_bounded(server: tuple[int, list[bytes]]) -> None:
    port, _ = server
    start = time.monotonic()
    # The server never greets: the probe comes back only because it gives up on its own.
    found = probe_ssh("127.0.0.1", port, 1.0)
    assert found is not None
    assert found.problem.endswith("but not as an SSH server (no greeting within 1s)")
    assert time.monotonic() - start < 30


@pytest.mark.fast
def test_a_resolver_that_hangs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hang(*args: object, **kwargs: object) -> list[object]:
        release.wait(60)
        raise OSError("released")

    monkeypatch.setattr(remotefs.socket, "getaddrinfo", hang)
    start = time.monotonic()
    try:
        found = probe_ssh("slow.example", 22, 0.5)
    finally:
        release.set()
    # Had the probe waited for the resolver, it would say "does not resolve (released)".
    assert found is not None
    assert found.problem == "resolving slow.example did not finish within 0.5s"
    assert time.monotonic() - start < 30


@pytest.mark.fast
def test_the_worker_names_the_setting_in_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(host="cn-9", migration_address=NOWHERE, remote_filesystem_transport="scp")
    with caplog.at_level(logging.WARNING, logger="resizeflow.worker"):
        line = worker.check_migration_address(settings)
    assert line is not None and "\n" not in line
    assert line.startswith(
        "host cn-9: other hosts cannot copy disks to this one over SSH (scp): "
        f"{NOWHERE} does not resolve ("
    )
    assert line.endswith(
        "; set RESIZEFLOW_MIGRATION_ADDRESS, or RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT=local "
        "if every host's instances dir is on this machine"
    )
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("WARNING", line)]
    # Unset, the address is the host name, and the line says so.
    unset = Settings(host="rf-nowhere", remote_filesystem_transport="rsync")
    line = worker.check_migration_address(unset)
    assert line is not None
    assert "rf-nowhere does not resolve" in line
    assert "set RESIZEFLOW_MIGRATION_ADDRESS (unset: the host name), or" in line


@pytest.mark.fast
def test_no_check_when_disks_move_through_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe(*args: object) -> None:
        raise AssertionError("probed")

    monkeypatch.setattr(remotefs, "probe_ssh", probe)
    # The default: test:/// moves disks locally, whatever the host name.
    assert worker.check_migration_address(Settings(host="rf-nowhere")) is None
    local = Settings(libvirt_uri="qemu:///system", remote_filesystem_transport="local")
    assert worker.check_migration_address(local) is None
