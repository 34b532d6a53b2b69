"""The vm tier: real QEMU guests (TCG here) on ``qemu:///system``, real workers, the real API.

One stack serves the whole session: PostgreSQL, Redis, the API process, beat,
and one worker per host (``vm1``, ``vm2``), all on one libvirtd. The two hosts
share nothing: each has its own instance dir and bridge, its own sshd on its
own loopback address (``tests.support.hosts``), and its domains are named per host
(``RESIZEFLOW_INSTANCE_NAME_TEMPLATE`` holds ``{host}``). A resize between them
copies the disks over SSH with rsync, as between two machines.

The guest is built once from Debian packages (see
:mod:`resizeflow.devstack.guest`) into ``var/guest`` and uploaded through the
stack's image API (``/image``), by name the stack's default image. These tests
need root, libvirtd, QEMU, qemu-img, busybox and ``ip``: they skip without them,
except in CI, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resizeflow.devstack import guest, libvirtd, qemu_demo
from resizeflow.devstack.stack import TEST_DRIVER_ENV, build
from tests.support.hosts import Hosts, start_hosts
from tests.support.stack import (
    PG_ADMIN_URL,
    REDIS_URL,
    Stack,
    destroy_stack,
    service_up,
    stack_env,
)
from tests.vm.helpers import VmStack

ROOT = Path(__file__).resolve().parents[2]
GUEST_DIR = Path(os.environ.get("RESIZEFLOW_GUEST_DIR", ROOT / "var" / "guest"))
HOSTS = ("vm1", "vm2")
TOOLS = ("libvirtd", "qemu-system-x86_64", "qemu-img", "busybox", "ip", "apt-get", "dpkg-deb")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the vm tier cannot run here, and CI needs it: {reason}")
    pytest.skip(reason)


def require_vm_host() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root: libvirtd, bridges and taps")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        _unavailable(f"missing {', '.join(missing)}; run `make vm-deps`")
    for url, port, name in ((REDIS_URL, 6379, "Redis"), (PG_ADMIN_URL, 5432, "PostgreSQL")):
        if not service_up(url, port):
            _unavailable(f"{name} at {url} is not reachable")
    libvirtd.ensure_running()


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VmStack]:
    require_vm_host()
    files = guest.build(GUEST_DIR)
    run_id = uuid.uuid4().hex[:6]
    state_dir = Path(tmp_path_factory.mktemp("vm")) / "state"
    state_dir.mkdir()
    hosts = start_hosts(state_dir / "hosts", HOSTS)
    try:
        yield from _vm_stack(state_dir, files, run_id, hosts)
    finally:
        hosts.stop_all()


def _vm_stack(
    state_dir: Path, files: guest.GuestFiles, run_id: str, hosts: Hosts
) -> Iterator[VmStack]:
    vm_env = {
        "RESIZEFLOW_LIBVIRT_URI": "qemu:///system",
        # By name: the guest is uploaded through the API once it runs.
        "RESIZEFLOW_DEFAULT_IMAGE": guest.IMAGE_NAME,
        "RESIZEFLOW_INSTANCE_NAME_TEMPLATE": f"rf{run_id}-{{host}}-{{uuid}}",
        # Each host's own, in VmStack.worker_env: "r{run}{i}b{vni}" (15 characters at most).
        "RESIZEFLOW_BRIDGE": f"r{run_id}{{vni}}",
        "RESIZEFLOW_SHUTDOWN_TIMEOUT": "20",
        "RESIZEFLOW_SHUTDOWN_RETRY_INTERVAL": "2",
        "RESIZEFLOW_RUNNING_TIMEOUT": "15",
        "RESIZEFLOW_PERIODIC_INTERVAL": "2",
        "RESIZEFLOW_LOG_FORMAT": "text",
    }
    # Every host's SSH settings and instances path; each worker gets its own
    # address (VmStack.worker_env).
    vm_env |= {
        k: v
        for k, v in hosts.env(hosts.hosts[0]).items()
        if k not in ("RESIZEFLOW_HOST", "RESIZEFLOW_MIGRATION_ADDRESS")
    }
    env = {k: v for k, v in stack_env(state_dir).items() if k not in TEST_DRIVER_ENV} | vm_env
    local = build(
        state_dir,
        broker=REDIS_URL,
        broker_prefix=f"rf-vm-{run_id}:",
        pg_admin_url=PG_ADMIN_URL,
        base_env=os.environ,
        log_dir=state_dir,
        env=env,
    )
    stack = Stack(local, "postgresql", HOSTS)
    built = VmStack(
        stack=stack,
        image_id="",
        files=files,
        run_id=run_id,
        hosts=hosts,
        net_env=qemu_demo.host_env(list(HOSTS), prefix=f"r{run_id[:4]}"),
    )
    try:
        # The block-storage host: its NBD exports are what guests' volumes are.
        local.spawn_storage()
        stack.api_endpoint()
        # As an operator loads an image: the kernel, ramdisk and disk through the image API.
        built.image_id = guest.upload(f"{local.api_url}/image", files)
        local.start_workers(HOSTS, env={h: built.worker_env(h) for h in HOSTS})
        # The DHCP host: every network's dnsmasq, reached from the compute hosts by VXLAN.
        local.start_network()
        local.wait_storage()
        stack.start_beat()
        built.create_flavors()
        yield built
    finally:
        destroy_stack(stack)
        # Whatever a failed test left: this run's domains, then its bridges.
        built.destroy_leftover_domains()
        built.remove_network_devices()
