"""The small Protocols the steps and the service layer call, and the frozen values they pass.

A driver covers only what the flows call. It never receives ORM rows or
sessions as arguments; database-backed drivers are bound to the step's session
when they are built, so their changes commit or roll back with the step.

The image and port descriptions (:class:`ImageSpec`, :class:`VifSpec`) are
what these services hand to the hypervisor, as Nova's image API and network
model do; the virt driver (:mod:`resizeflow.virt`) consumes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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
    """One port of an instance: a tap with this MAC on the host's bridge of its network.

    ``vni`` is the network's VXLAN id: the host names the network's bridge
    and tunnel after it, so every host's bridge of one network is one segment.
    """

    port_id: str
    mac_address: str
    ip_address: str | None = None
    network_id: str = ""
    vni: int = 0

    @property
    def tap(self) -> str:
        # Nova's naming: "tap" and the start of the port id, within IFNAMSIZ.
        return ("tap" + self.port_id)[:14]


@dataclass(frozen=True)
class TunnelPeer:
    """A host's VXLAN tunnel endpoint (a row of ``tunnel_endpoints``): where
    every other host floods a network's broadcasts to reach its ports."""

    host: str
    ip_address: str
    udp_port: int = 4789


@dataclass(frozen=True)
class PortRequest:
    """One NIC asked for at boot: a new port on ``network_id`` (with the fixed
    IP ``address`` if given), or the existing ``port_id``.

    Neither (the default) is a port on the deployment's default network.
    """

    network_id: str | None = None
    port_id: str | None = None
    address: str | None = None


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


class NetworkDriver(Protocol):
    def setup_networks_on_host(self, instance_uuid: str, host: str) -> None: ...

    def teardown_networks_on_host(self, instance_uuid: str, host: str) -> None: ...

    def migrate_instance_finish(self, instance_uuid: str, host: str) -> None: ...

    def allocate_for_instance(
        self, instance_uuid: str, project_id: str, requests: Sequence[PortRequest]
    ) -> None: ...

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
