"""A worker whose disks move over SSH says at start, in one line, when other
hosts could not reach its own migration address, and which setting fixes it."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from resizeflow import worker
from resizeflow.conf import Settings
from resizeflow.devstack.hosts import Hosts
from resizeflow.devstack.stack import PRIVATE_REDIS, TEST_DRIVER_ENV, build
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
    found = probe_ssh("127.0.0.1", port, 1.0)
    assert time.monotonic() - start < 3.0
    assert found is not None
    assert found.problem.endswith("but not as an SSH server (no greeting within 1s)")


@pytest.mark.fast
def test_a_resolver_that_hangs_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hang(*args: object, **kwargs: object) -> list[object]:
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(remotefs.socket, "getaddrinfo", hang)
    start = time.monotonic()
    try:
        found = probe_ssh("slow.example", 22, 0.5)
    finally:
        release.set()
    assert time.monotonic() - start < 3.0
    assert found is not None
    assert found.problem == "resolving slow.example did not finish within 0.5s"


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


def test_a_started_worker_warns_once_and_keeps_serving(tmp_path: Path) -> None:
    env = {
        **TEST_DRIVER_ENV,
        "RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT": "rsync",
        "RESIZEFLOW_SSH_CONNECT_TIMEOUT": "2",
    }
    local = build(tmp_path / "state", broker=PRIVATE_REDIS, env=env, log_dir=tmp_path / "logs")
    try:
        started = time.monotonic()
        node = local.start_worker("rf-nowhere", "--loglevel", "INFO")
        assert time.monotonic() - started < 60
        # Still serving after its warning.
        assert local.app.control.ping(destination=[node], timeout=2)
        text = local.sup.log_path("worker-rf-nowhere").read_text()
    finally:
        local.close()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    warnings = [r["event"] for r in records if r["level"] == "warning"]
    ours = [w for w in warnings if "cannot copy disks" in w]
    assert len(ours) == 1, warnings
    assert ours[0].startswith(
        "host rf-nowhere: other hosts cannot copy disks to this one over SSH (rsync): "
        "rf-nowhere does not resolve ("
    )
    assert "; set RESIZEFLOW_MIGRATION_ADDRESS (unset: the host name), or " in ours[0]


@pytest.mark.hosts
def test_a_host_with_its_own_sshd_passes_and_a_wrong_port_is_named(two_hosts: Hosts) -> None:
    """Against a real sshd: the address a deployed host advertises answers; the
    same address on a port nothing listens on is named with both settings."""
    a = two_hosts.hosts[0]
    settings = Settings.from_env(
        two_hosts.env(a) | {"RESIZEFLOW_LIBVIRT_URI": "qemu:///system"},
        state_dir=two_hosts.root / "state-check",
    )
    assert settings.disk_transport == "rsync"
    assert worker.check_migration_address(settings) is None
    wrong = replace(settings, ssh_port=free_port())
    line = worker.check_migration_address(wrong)
    assert line is not None
    assert f"no SSH server answers at {a.address} port {wrong.ssh_port}" in line
    assert "; set RESIZEFLOW_MIGRATION_ADDRESS or RESIZEFLOW_SSH_PORT, or " in line
