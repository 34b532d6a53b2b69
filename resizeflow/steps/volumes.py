"""An instance's volumes as the steps move them: connected to one host, in its domain.

Every step that defines a domain (spawn, a hard reboot, the finish of a resize
or of a revert) and the volume operations (attach, detach) use
:class:`Connecting`: the step names the host in the record before its
hypervisor phase, the phase makes the connections and gives the domain the
volumes as that host reaches them, and the step records their
``connection_info`` after it. The order is why a redelivery converges (see
:mod:`resizeflow.openstack.volume`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from resizeflow.openstack import volume
from resizeflow.openstack.volume import Attached
from resizeflow.steps.context import InstanceContext
from resizeflow.storage.base import BlockStorage
from resizeflow.virt.base import VolumeConnection

# The attachments a domain is defined with: those a guest has or is being
# given. A reserved one waits for its attach (or a spawn, which takes them
# all); a detaching one is on its way out.
IN_DOMAIN = ("attaching", "attached")


@dataclass(frozen=True)
class Connecting:
    """An instance's volumes, to be connected to ``host`` by a step's hypervisor work."""

    storage: BlockStorage | None
    volumes: tuple[Attached, ...]
    host: str

    def connect(self) -> tuple[dict[str, Any], tuple[VolumeConnection, ...]]:
        """Connect the host (touching no row); the connection_info of each volume,
        and the volumes as the domain gets them."""
        infos = volume.connect(self.storage, self.volumes, self.host)
        return infos, guest_volumes(self.volumes, infos)

    def recorded(self, ctx: InstanceContext, infos: Mapping[str, Any]) -> None:
        """After the hypervisor work: the connections are made, in the step's transaction."""
        ctx.volumes.record_connected(self.volumes, self.host, infos)


def guest_volumes(
    volumes: tuple[Attached, ...], infos: Mapping[str, Any]
) -> tuple[VolumeConnection, ...]:
    return tuple(
        VolumeConnection.from_connection_info(infos[vol.volume_id], vol.device) for vol in volumes
    )


def connecting(ctx: InstanceContext, host: str, *status: str) -> Connecting:
    """The instance's volumes (those in ``status``), recorded as connected to
    ``host`` before they are (committed with the step's first phase)."""
    every = ctx.volumes.of(ctx.instance.uuid)
    found = tuple(v for v in every if not status or v.attach_status in status)
    # One host at a time reaches a volume: one still connected elsewhere (left
    # so by a step that failed for good) is cut off first, before the record
    # names this host instead.
    for other in sorted({v.connected_host or host for v in found} - {host}):
        _disconnect(ctx, every, other)
    ctx.volumes.record_connecting(found, host)
    return Connecting(ctx.runtime.storage, found, host)


def reaching(volumes: tuple[Attached, ...], here: str) -> list[str]:
    """The hosts whose connections to ``volumes`` a step cuts: those the
    record names, and ``here``."""
    return sorted({vol.connected_host for vol in volumes if vol.connected_host} | {here})


def disconnect_now(ctx: InstanceContext, host: str) -> None:
    """Terminate ``host``'s connections to the instance's volumes, then clear
    them from the record, in the step's transaction (a step with no hypervisor phase)."""
    _disconnect(ctx, ctx.volumes.of(ctx.instance.uuid), host)


def _disconnect(ctx: InstanceContext, volumes: tuple[Attached, ...], host: str) -> None:
    volume.disconnect(ctx.runtime.storage, volumes, host)
    ctx.volumes.record_disconnected(volumes, host)


def detach_all_now(ctx: InstanceContext) -> None:
    """Terminate every connection of the instance's volumes and remove its
    attachments: the volumes are ``available``, with their data (a deleted
    server's), but those its block device mapping said to delete with it."""
    found = ctx.volumes.of(ctx.instance.uuid)
    for host in reaching(found, ctx.host):
        volume.disconnect(ctx.runtime.storage, found, host)
    ctx.volumes.record_detached(found)
    doomed = [vol for vol in found if vol.delete_on_termination]
    # The data first: a redelivery finds the records and deletes again (a no-op).
    volume.delete_volumes(ctx.runtime.storage, doomed)
    ctx.volumes.record_deleted(doomed)
