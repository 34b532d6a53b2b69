"""Real guests that fail: one that never comes up running, and a libvirtd that is down."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from resizeflow.devstack import libvirtd
from resizeflow.states import JournalStatus, MigrationStatus
from tests.support.stack import wait_for
from tests.vm.helpers import BIG, VmStack


def _project() -> str:
    return f"p-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def keep_paused(vm: VmStack, host: str, sid: str) -> Iterator[threading.Event]:
    """Pause ``host``'s domain of ``sid`` whenever it runs, as an I/O error on its disk would."""
    stop, paused = threading.Event(), threading.Event()

    def run() -> None:
        conn = libvirt.open("qemu:///system")
        name = vm.domain_name(host, sid)
        try:
            while not stop.wait(0.02):
                with contextlib.suppress(libvirt.libvirtError):
                    dom = conn.lookupByName(name)
                    if dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                        dom.suspend()
                        paused.set()
        finally:
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield paused
    finally:
        stop.set()
        thread.join(timeout=5)


def test_guest_that_never_runs_fails_the_step_and_leaks_nothing(vm: VmStack) -> None:
    sid = vm.boot(_project(), "vm1")
    vm.wait_status(sid, "ACTIVE")
    tap = vm.tap_of(sid)
    with keep_paused(vm, "vm2", sid) as paused:
        vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
        server = vm.wait_status(sid, "ERROR", timeout=120)
        assert paused.is_set()
    # For good, not retried: finish_resize ran once and the fault says why.
    assert "did not reach running within 15.0 seconds" in server["fault"]["message"]
    assert "PAUSED" in server["fault"]["message"]
    (mig_id,) = vm.migration_ids(sid)
    assert vm.stack.migration(mig_id).status == MigrationStatus.ERROR
    (finish,) = [r for r in vm.stack.journal(mig_id) if r.step.endswith("finish_resize")]
    assert (finish.status, finish.attempts) == (JournalStatus.FAILED, 1)
    # The dest's domain was stopped and undefined, and its tap went with it.
    assert vm.domain_state("vm2", sid) is None
    assert tap not in vm.taps("vm2")

    # Deleting the server in ERROR removes the rest: the source domain and dirs
    # here, the dest's copied disks through beat's incomplete-migration cleanup.
    vm.delete(sid)
    vm.wait_gone(sid)
    wait_for(
        lambda: vm.stack.migration(mig_id).status == MigrationStatus.FAILED,
        timeout=60,
        what="the cleanup to purge both hosts",
    )
    for host in ("vm1", "vm2"):
        assert vm.domain_state(host, sid) is None
        assert not vm.inst_dir(host, sid).exists()
        assert not vm.inst_dir(host, sid, "_resize").exists()
        assert tap not in vm.taps(host)
    assert vm.allocations(sid, *vm.migration_uuids(sid)) == 0


def _libvirtd_pid() -> int:
    return int(Path("/run/libvirtd.pid").read_text().strip())


@pytest.fixture
def libvirtd_down() -> Iterator[None]:
    """Stop the project's libvirtd for the test; start it again afterwards.

    Guests keep running meanwhile: QEMU does not depend on the daemon.
    """
    pid = _libvirtd_pid()
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not libvirtd.running(), timeout=30, what="libvirtd to stop")
    try:
        yield
    finally:
        libvirtd.ensure_running()


def test_libvirtd_down_is_retried_then_errors_out(
    vm: VmStack, request: pytest.FixtureRequest
) -> None:
    sid = vm.boot(_project(), "vm1")
    vm.wait_status(sid, "ACTIVE")
    request.getfixturevalue("libvirtd_down")
    start = time.monotonic()
    vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
    server = vm.wait_status(sid, "ERROR", timeout=60)
    (mig_id,) = vm.migration_ids(sid)
    (step,) = [r for r in vm.stack.journal(mig_id) if r.step.endswith("resize_instance")]
    # Transient: tried once and retried STEP_MAX_RETRIES (4) times, then errored out.
    assert (step.status, step.attempts) == (JournalStatus.FAILED, 5)
    assert "Transient failure" in server["fault"]["message"]
    assert time.monotonic() - start < 60
    libvirtd.ensure_running()
    # The guest outlived the daemon; with libvirtd back the server can be deleted.
    assert vm.domain_state("vm1", sid) == "running"
    vm.delete(sid)
    vm.wait_gone(sid)
    assert vm.domain_state("vm1", sid) is None
