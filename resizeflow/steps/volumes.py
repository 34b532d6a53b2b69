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
    found = ctx.volumes.of(ctx.instance.uuid, *status)
    # One host at a time reaches a volume: one still connected elsewhere (left
    # so by a step that failed for good) is cut off first, before the record
    # names this host instead.
    for other in sorted({v.connected_host or host for v in found} - {host}):
        disconnect_now(ctx, other)
    ctx.volumes.record_connecting(found, host)
    return Connecting(ctx.runtime.storage, found, host)


def disconnect_now(ctx: InstanceContext, host: str) -> None:
    """Terminate ``host``'s connections to the instance's volumes, then clear
    them from the record, in the step's transaction (a step with no hypervisor phase)."""
    found = ctx.volumes.of(ctx.instance.uuid)
    volume.disconnect(ctx.runtime.storage, found, host)
    ctx.volumes.record_disconnected(found, host)


def detach_all_now(ctx: InstanceContext) -> None:
    """Terminate every connection of the instance's volumes and remove its
    attachments: the volumes are ``available``, with their data (a deleted
    server's), but those its block device mapping said to delete with it."""
    found = ctx.volumes.of(ctx.instance.uuid)
    for host in sorted({vol.connected_host for vol in found if vol.connected_host} | {ctx.host}):
        volume.disconnect(ctx.runtime.storage, found, host)
    ctx.volumes.record_detached(found)
    doomed = [vol for vol in found if vol.delete_on_termination]
    # The data first: a redelivery finds the records and deletes again (a no-op).
    volume.delete_volumes(ctx.runtime.storage, doomed)
    ctx.volumes.record_deleted(doomed)
