"""The hypervisor's small Protocol, and the frozen values the steps pass it.

The virt driver covers only what the flows call. It never receives ORM rows
or sessions: a step describes the instance as an :class:`InstanceSpec`, built
from the images and ports the OpenStack stand-ins describe
(:mod:`resizeflow.openstack.base`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from resizeflow.errors import VirtError
from resizeflow.openstack.base import ImageSpec, TunnelPeer, VifSpec
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
    # Every host's VXLAN tunnel endpoint, this one's too: a real host floods its
    # networks' broadcasts to the others' (the host leaves itself out).
    tunnel_peers: tuple[TunnelPeer, ...] = ()

    @property
    def domain_name(self) -> str:
        return f"instance-{self.uuid}"


@dataclass(frozen=True)
class VolumeConnection:
    """One volume as one host reaches it: an NBD export, and the disk it is in the guest.

    Built from the ``connection_info`` the block-storage service returns for
    this host's connection (:meth:`from_connection_info`). ``device`` is the
    target the domain XML gives it (Nova's BDM ``device_name`` without
    ``/dev/``); the guest names its disks in the order it finds them, so it
    tells volumes apart by their serial, the volume id, as on Nova. A
    virtio-blk serial holds 20 bytes: the guest reads :attr:`guest_serial`.
    """

    volume_id: str
    device: str
    host: str
    port: int
    export: str
    read_only: bool = False

    # The connection_info types this hypervisor can attach.
    DRIVER_TYPES = ("nbd",)
    VIRTIO_SERIAL_BYTES = 20

    @property
    def guest_serial(self) -> str:
        """The serial the guest sees in ``/sys/block/vdX/serial``."""
        return self.volume_id[: self.VIRTIO_SERIAL_BYTES]

    @classmethod
    def from_connection_info(cls, info: Mapping[str, Any], device: str) -> VolumeConnection:
        """The one place that reads a Cinder-shaped ``connection_info``:
        ``{"driver_volume_type": "nbd", "data": {"host", "port", "name",
        "volume_id", "access_mode"}}``. Any other type, or an NBD one lacking
        what QEMU needs to connect, is a VirtError naming what is wrong."""
        kind = info.get("driver_volume_type") if isinstance(info, Mapping) else None
        if kind not in cls.DRIVER_TYPES:
            raise VirtError(
                reason=f"volume driver type {kind!r} is not supported; "
                f"this hypervisor attaches {', '.join(cls.DRIVER_TYPES)} volumes"
            )
        data = info.get("data")
        if not isinstance(data, Mapping):
            raise VirtError(reason="nbd connection_info has no 'data' object")
        missing = [k for k in ("host", "port", "name", "volume_id") if not data.get(k)]
        if missing:
            raise VirtError(reason=f"nbd connection_info lacks {', '.join(missing)}")
        port = data["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise VirtError(reason=f"nbd connection_info has an invalid port {port!r}")
        if not (device.startswith("vd") and device[2:].isalpha() and device != "vda"):
            raise VirtError(reason=f"volume device {device!r} is not a virtio disk after vda")
        access = data.get("access_mode", "rw")
        if access not in ("rw", "ro"):
            raise VirtError(reason=f"nbd connection_info has an invalid access_mode {access!r}")
        return cls(
            volume_id=str(data["volume_id"]),
            device=device,
            host=str(data["host"]),
            port=port,
            export=str(data["name"]),
            read_only=access == "ro",
        )


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

    ``volumes``, where a call defines the domain (spawn, a hard reboot, the
    finish of a resize or of a revert), are the instance's volumes as *this*
    host is connected to them (:meth:`VolumeConnection.from_connection_info`
    of the connection made for this host); the definition holds exactly
    those, after the local disks.
    """

    def node_resources(self) -> NodeResources: ...

    def spawn(
        self,
        inst: InstanceSpec,
        *,
        power_on: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None: ...

    def power_off(self, inst: InstanceSpec, *, deadline: float | None = None) -> None: ...

    def power_on(self, inst: InstanceSpec, *, deadline: float | None = None) -> None: ...

    def power_state(self, uuid: str) -> PowerState: ...

    def reboot(
        self,
        inst: InstanceSpec,
        *,
        hard: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
        """Soft: a clean shutdown and a start (hard if the guest will not go
        down); hard: destroy, define again from ``inst`` and ``volumes``, start."""

    def console_output(self, uuid: str) -> bytes:
        """The end of the guest's console log on this host."""

    def domain_whole(self, uuid: str) -> bool:
        """Whether this host still has the instance's domain defined, with its root disk."""

    def migrate_disk_and_power_off(
        self, inst: InstanceSpec, dest: PeerHost, *, deadline: float | None = None
    ) -> None:
        """Power off, move the instance dir to ``<uuid>_resize``, copy its disks to ``dest``."""

    def finish_migration(
        self,
        inst: InstanceSpec,
        *,
        power_on: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
        """On the dest: grow the copied disk to the new flavor, define (with
        the dest's volume connections) and maybe start."""

    def confirm_migration(self, inst: InstanceSpec, *, same_host: bool) -> None:
        """On the source: remove ``<uuid>_resize`` and, unless same host, undefine."""

    def destroy(self, inst: InstanceSpec, *, destroy_disks: bool) -> None: ...

    def shares_resize_source(self, uuid: str) -> bool:
        """Whether the resize source's ``<uuid>_resize`` is in this host's storage."""

    def finish_revert_migration(
        self,
        inst: InstanceSpec,
        *,
        power_on: bool,
        deadline: float | None = None,
        volumes: Sequence[VolumeConnection] = (),
    ) -> None:
        """On the source: rename ``<uuid>_resize`` back, define (with the
        source's new volume connections), and maybe start."""

    def purge(self, uuid: str) -> list[str]:
        """Undefine the domain and remove every directory of a deleted instance."""

    def recover(self, running: dict[str, bool], peers: Sequence[TunnelPeer] = ()) -> list[str]:
        """Redefine domains from instance dirs, plug their networks (tunnels to
        ``peers``); start those mapped to True."""

    def list_domains(self) -> list[DomainInfo]: ...

    def attach_volume(self, uuid: str, volume: VolumeConnection) -> str:
        """Add the volume to the domain's definition and, if it runs, to the
        guest; what is already attached is left as it is. Returns the device
        it is at: ``volume.device``, or the first free one if a disk has that.
        A domain not defined here is InstanceNotFound."""

    def detach_volume(self, uuid: str, volume_id: str, *, deadline: float | None = None) -> None:
        """Remove the volume from the definition and, if it runs, from the
        guest, returning once the guest has let it go; a volume not attached,
        or no domain here, is a no-op. A guest that keeps it is a TransientError."""

    def attached_volumes(self, uuid: str) -> dict[str, str]:
        """The volumes the domain's definition holds: volume id to target device."""
