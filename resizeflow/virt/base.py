"""The hypervisor's small Protocol, and the frozen values the steps pass it.

The virt driver covers only what the flows call. It never receives ORM rows
or sessions: a step describes the instance as an :class:`InstanceSpec`, built
from the images and ports the OpenStack stand-ins describe
(:mod:`resizeflow.openstack.base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Protocol

from resizeflow.openstack.base import ImageSpec, VifSpec
from resizeflow.states import PowerState


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
