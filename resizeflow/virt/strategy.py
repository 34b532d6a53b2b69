"""The two kinds of host the libvirt driver runs on, behind one small Protocol.

The driver does the same things on every host: it defines domains from the
instance directories, starts and stops them, renames ``<uuid>`` to
``<uuid>_resize`` and back, and copies disks to the dest. What differs is
what a guest is made of, and that is this Protocol:

- :class:`~resizeflow.virt.testdriver.TestDriverHost`, on libvirt's test
  driver (``test:///``, the fast tier and the demo): a sparse raw file as the
  disk, grown with ``truncate``; a minimal domain XML, with its volumes,
  attached and detached by redefining it; no NICs; a line in
  ``console.log`` for each start and stop, as a serial console would show.
- :class:`~resizeflow.virt.realhost.RealHypervisorHost`, on QEMU or KVM:
  Nova's disk layout (:mod:`resizeflow.virt.disks`), Nova's domain XML
  (:mod:`resizeflow.virt.domain_xml`), volumes attached and detached live
  by libvirt, taps on their network's bridge, joined to the other hosts by
  VXLAN (:mod:`resizeflow.virt.vifs`), a clean shutdown before a destroy, and a
  start that waits until the guest runs.

The driver picks one at construction, from the virt type, and never asks
which it has.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from resizeflow.errors import ConfigError
from resizeflow.openstack.base import TunnelPeer
from resizeflow.virt.base import InstanceSpec, VolumeConnection
from resizeflow.virt.remotefs.base import RemoteFilesystem, RemoteHost

# The URI schemes whose virt type is known without asking the host.
_REAL_SCHEMES = frozenset({"qemu"})


def is_test_driver(uri: str, virt_type: str | None) -> bool:
    """Whether a driver runs on libvirt's test driver: virt type ``test``, given or
    from a ``test:///`` URI; anything else is a real hypervisor, whose type is
    given, or detected for a ``qemu`` URI."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0]
    if virt_type:
        return virt_type == "test"
    if scheme == "test":
        return True
    if scheme not in _REAL_SCHEMES:
        raise ConfigError(f"cannot infer virt_type from libvirt URI {uri!r}; set it")
    return False


@dataclass(frozen=True)
class DiskCopy:
    """What one disk's copy to the dest moved: bytes sent, and the backing images sent with it."""

    sent: int
    backing: tuple[str, ...] = ()


class HostStrategy(Protocol):
    """What a guest is made of on one kind of host."""

    @property
    def real(self) -> bool:
        """Whether guests really run here (QEMU or KVM), for those who report it."""

    @property
    def virt_type(self) -> str:
        """The domain type: ``test``, or the hypervisor's (``qemu``, ``kvm``...)."""

    # -- the host ------------------------------------------------------------
    def check(self) -> None:
        """At the worker's start: refuse a configuration this host cannot run."""

    # -- disks -----------------------------------------------------------------
    @property
    def copied_disks(self) -> tuple[str, ...]:
        """The files of an instance dir that a resize copies to the dest."""

    def create_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        """A new instance's disks in its (existing) directory; those there are kept."""

    def recreate_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        """A hard reboot's disks: those there kept, the missing ones made or refused."""

    def grow_disks(self, inst_dir: Path, inst: InstanceSpec) -> None:
        """The disks copied from the source, grown to the new flavor (to an absolute size)."""

    def copy_disk(
        self,
        fs: RemoteFilesystem,
        source: Path,
        peer: RemoteHost,
        target: PurePosixPath,
        remote_instances_dir: PurePosixPath,
        timeout: float | None,
    ) -> DiskCopy:
        """Copy one disk to ``target`` on the peer, whose instance dirs are in
        ``remote_instances_dir``."""

    # -- domains -------------------------------------------------------------------
    def domain_xml(
        self,
        inst: InstanceSpec,
        inst_dir: Path,
        name: str,
        domain_uuid: str,
        volumes: Sequence[VolumeConnection],
    ) -> str:
        """The XML to define the instance's domain from, with these volumes."""

    def attach_disk(self, dom: Any, disk_xml: str, *, config: bool, live: bool) -> None:
        """Add a volume's ``<disk>`` to the definition and/or the running guest."""

    def detach_disk(
        self,
        dom: Any,
        disk_xml: str,
        volume_id: str,
        *,
        config: bool,
        live: bool,
        deadline: float | None,
    ) -> None:
        """Remove a volume's ``<disk>`` from the definition and/or the running
        guest; a live detach returns once the guest has let the disk go."""

    def console_note(self, uuid: str, what: str) -> None:
        """Note in the instance's console log that this host ``what`` (started, stopped) it."""

    def wait_until_running(self, dom: Any, uuid: str, deadline: float | None) -> None:
        """After a start: return once the guest runs, or raise GuestNotRunning."""

    def shut_down(self, dom: Any, deadline: float | None) -> bool:
        """A power off's clean part: True if the guest went down by itself, False if
        the caller must destroy it."""

    def shut_down_for_reboot(self, dom: Any, deadline: float | None) -> bool:
        """A soft reboot's shutdown: False if the guest would not go down (the
        caller reboots it hard instead)."""

    # -- NICs ---------------------------------------------------------------------------
    def plug(self, vnis: Iterable[int], peers: Sequence[TunnelPeer]) -> None:
        """Before a domain starts: what its NICs attach to, the bridges of these
        networks, joined to the ``peers``' tunnel endpoints."""

    def networks_of(self, xml: str) -> set[int]:
        """The networks (VNIs) a domain's XML plugs NICs into: what a recovery plugs."""

    def taps(self, dom: Any) -> list[str]:
        """The taps a domain's definition names: what to unplug once it is gone."""

    def unplug(self, taps: Iterable[str]) -> None:
        """Remove these taps, as Nova's unplug_vifs does."""
