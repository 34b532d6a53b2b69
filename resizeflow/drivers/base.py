"""The small Protocols that steps call, and the frozen values they pass.

A driver covers only what the flows call. It never receives ORM rows or
sessions as arguments; database-backed drivers are bound to the step's session
when they are built, so their changes commit or roll back with the step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from resizeflow.states import PowerState


@dataclass(frozen=True)
class ImageSpec:
    """The image an instance's root disk is built from, as files the host can read."""

    id: str
    path: str
    disk_format: str  # raw or qcow2
    virtual_size: int
    # A kernel and initramfs to boot directly (Nova's kernel_id / ramdisk_id), if any.
    kernel: str | None = None
    ramdisk: str | None = None
    cmdline: str | None = None


@dataclass(frozen=True)
class VifSpec:
    """One port of an instance: a tap on the host's bridge with this MAC."""

    port_id: str
    mac_address: str
    ip_address: str | None = None

    @property
    def tap(self) -> str:
        # Nova's naming: "tap" and the start of the port id, within IFNAMSIZ.
        return ("tap" + self.port_id)[:14]


@dataclass(frozen=True)
class InstanceSpec:
    """What the hypervisor needs to know about an instance at one flavor."""

    uuid: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int = 0
    swap_mb: int = 0
    image: ImageSpec | None = None
    vifs: tuple[VifSpec, ...] = ()
    flavor_name: str = ""

    @property
    def domain_name(self) -> str:
        return f"instance-{self.uuid}"


@dataclass(frozen=True)
class PeerHost:
    """Another compute host, as a disk move sees it: its name (for errors), its
    migration address (Nova's my_ip, from its service record), and where it
    keeps its instance directories."""

    name: str
    address: str
    instances_dir: PurePosixPath


@dataclass(frozen=True)
class NodeResources:
    hypervisor_hostname: str
    vcpus: int
    memory_mb: int
    local_gb: int


@dataclass(frozen=True)
class DomainInfo:
    uuid: str
    name: str
    power_state: PowerState
    vcpus: int
    memory_mb: int


@dataclass(frozen=True)
class Resources:
    vcpus: int
    memory_mb: int
    disk_gb: int

    @classmethod
    def of_flavor(cls, flavor: dict[str, Any]) -> Resources:
        """What a server of ``flavor`` claims: every boot, resize, revert and
        quota check asks this one place.

        DISK_GB counts root, ephemeral and swap, as Nova's scheduler
        (``resources_from_flavor``) asks placement for an image-backed server:
        swap is in MB and is rounded up to whole GB. resizeflow has no
        volume-backed servers, whose root disk Nova leaves out.
        """
        swap_mb = int(flavor.get("swap", 0) or 0)  # Nova's API showed none as "" before 2.75
        return cls(
            vcpus=int(flavor["vcpus"]),
            memory_mb=int(flavor["memory_mb"]),
            disk_gb=int(flavor["root_gb"])
            + int(flavor.get("ephemeral_gb", 0))
            + math.ceil(swap_mb / 1024),
        )

    def as_classes(self) -> dict[str, int]:
        return {"VCPU": self.vcpus, "MEMORY_MB": self.memory_mb, "DISK_GB": self.disk_gb}


@dataclass(frozen=True)
class NodeRef:
    host: str
    node: str


@dataclass(frozen=True)
class Notification:
    event_type: str
    publisher_id: str
    payload: dict[str, Any]
    priority: str = "INFO"


class VirtDriver(Protocol):
    """The hypervisor of one compute host.

    ``deadline`` (a ``time.monotonic()`` value, from the step's hypervisor
    phase) bounds every wait and copy of a call: a shutdown, a boot wait and a
    disk copy stop there rather than run on unbounded.
    """

    def node_resources(self) -> NodeResources: ...

    def spawn(
        self, inst: InstanceSpec, *, power_on: bool, deadline: float | None = None
    ) -> None: ...

    def power_off(self, inst: InstanceSpec, *, deadline: float | None = None) -> None: ...

    def power_on(self, inst: InstanceSpec, *, deadline: float | None = None) -> None: ...

    def power_state(self, uuid: str) -> PowerState: ...

    def reboot(self, inst: InstanceSpec, *, hard: bool, deadline: float | None = None) -> None:
        """Soft: a clean shutdown and a start (hard if the guest will not go
        down); hard: destroy, define again from ``inst``, start."""

    def console_output(self, uuid: str) -> bytes:
        """The end of the guest's console log on this host."""

    def domain_whole(self, uuid: str) -> bool:
        """Whether this host still has the instance's domain defined, with its root disk."""

    def migrate_disk_and_power_off(
        self, inst: InstanceSpec, dest: PeerHost, *, deadline: float | None = None
    ) -> None:
        """Power off, move the instance dir to ``<uuid>_resize``, copy its disks to ``dest``."""

    def finish_migration(
        self, inst: InstanceSpec, *, power_on: bool, deadline: float | None = None
    ) -> None:
        """On the dest: grow the copied disk to the new flavor, define and maybe start."""

    def confirm_migration(self, inst: InstanceSpec, *, same_host: bool) -> None:
        """On the source: remove ``<uuid>_resize`` and, unless same host, undefine."""

    def destroy(self, inst: InstanceSpec, *, destroy_disks: bool) -> None: ...

    def shares_resize_source(self, uuid: str) -> bool:
        """Whether the resize source's ``<uuid>_resize`` is in this host's storage."""

    def finish_revert_migration(
        self, inst: InstanceSpec, *, power_on: bool, deadline: float | None = None
    ) -> None:
        """On the source: rename ``<uuid>_resize`` back, define, and maybe start."""

    def purge(self, uuid: str) -> list[str]:
        """Undefine the domain and remove every directory of a deleted instance."""

    def recover(self, running: dict[str, bool]) -> list[str]:
        """Redefine domains from instance dirs; start those mapped to True."""

    def list_domains(self) -> list[DomainInfo]: ...


class NetworkDriver(Protocol):
    def setup_networks_on_host(self, instance_uuid: str, host: str) -> None: ...

    def teardown_networks_on_host(self, instance_uuid: str, host: str) -> None: ...

    def allocate_for_instance(self, instance_uuid: str, networks: Sequence[str]) -> None: ...

    def deallocate_for_instance(self, instance_uuid: str) -> None: ...


class VolumeDriver(Protocol):
    def initialize_connections(self, instance_uuid: str, host: str) -> None: ...

    def terminate_connections(self, instance_uuid: str, host: str) -> None: ...

    def detach_all(self, instance_uuid: str) -> None: ...


class PlacementDriver(Protocol):
    def claim(self, consumer: str, node: NodeRef, resources: Resources) -> None:
        """Allocate ``resources`` to ``consumer`` on ``node``, or raise ClaimFailed."""

    def move(self, source_consumer: str, target_consumer: str, node: NodeRef) -> None:
        """Hand ``source_consumer``'s allocation on ``node`` to ``target_consumer``."""

    def release(self, consumer: str, node: NodeRef) -> None: ...

    def can_fit(self, node: NodeRef, resources: Resources) -> bool: ...


class QuotaDriver(Protocol):
    def check_deltas(self, project_id: str, *, cores: int, ram: int, instances: int = 0) -> None:
        """Raise OverQuota if adding these deltas would exceed a project limit."""


class Notifier(Protocol):
    def publish(self, notifications: Sequence[Notification]) -> None: ...
