"""Nova's compute API for a server's volumes: attach, detach, list, and volumes at boot.

An attach reserves the volume (Cinder's ``reserved``) and records its
attachment with what Nova's block device mapping says of it (device, tag,
delete_on_termination), in the transaction that journals the operation; the
server's host then connects and attaches it (``resizeflow.steps.instance``).
A detach marks the attachment ``detaching`` the same way; the host takes the
volume out of the guest, cuts its connection and removes the attachment.

Nova sets no task_state while a volume is attached or detached. resizeflow
journals each as an operation of the server, and refuses another volume
operation, a resize, a migration, a confirm or a revert while one is open:
they would race it on the server's host.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import errors, flows
from resizeflow.compute.checks import check_instance_lock, check_instance_state
from resizeflow.compute.events import record_action
from resizeflow.compute.launching import Launch, Launcher, plan
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.db.instances import visible_instance
from resizeflow.db.models import Instance, StepJournal, Volume, VolumeAttachment, utcnow
from resizeflow.openstack.cinder import mark_detaching
from resizeflow.states import JOURNAL_CLAIMABLE, VmState

# The states Nova attaches and detaches a volume in (that resizeflow has).
VOLUME_VM_STATES = (VmState.ACTIVE, VmState.STOPPED, VmState.RESIZED)
_DEVICE = re.compile(r"^/dev/vd[b-z]$")
VOLUME_FLOWS = frozenset({flows.ATTACH_VOLUME.name, flows.DETACH_VOLUME.name})


class VolumeOperationInProgress(errors.Conflict):
    msg_fmt = (
        "Instance %(instance_uuid)s is attaching or detaching a volume; "
        "try again once that is done."
    )


class DevicePathInUse(errors.Conflict):
    msg_fmt = "The supplied device path (%(path)s) is in use."


class InvalidDevicePath(errors.Invalid):
    msg_fmt = "The supplied device path (%(path)s) is invalid."


@dataclass(frozen=True)
class BlockDevice:
    """A volume a server is booted with (``block_device_mapping_v2``), or one attached later."""

    volume_id: str
    device: str | None = None
    tag: str | None = None
    delete_on_termination: bool = False
    boot_index: int | None = None


@dataclass(frozen=True)
class AttachmentView:
    """One of a server's volume attachments, as Nova's API shows its BDM."""

    volume_id: str
    server_id: str
    device: str | None
    tag: str | None
    delete_on_termination: bool
    attachment_id: str
    bdm_uuid: str

    @classmethod
    def of(cls, row: VolumeAttachment) -> AttachmentView:
        return cls(
            volume_id=row.volume_id,
            server_id=row.instance_uuid,
            device=row.device,
            tag=row.tag,
            delete_on_termination=bool(row.delete_on_termination),
            attachment_id=row.attachment_id,
            bdm_uuid=row.bdm_uuid or row.attachment_id,
        )


def check_no_volume_operation(session: Session, inst: Instance) -> None:
    """Refuse work on a server while one of its volume operations is open."""
    found = session.scalar(
        select(StepJournal.id)
        .where(
            StepJournal.instance_uuid == inst.uuid,
            StepJournal.migration_id.is_(None),
            StepJournal.flow.in_(sorted(VOLUME_FLOWS)),
            StepJournal.status.in_(sorted(JOURNAL_CLAIMABLE)),
        )
        .limit(1)
    )
    if found is not None:
        raise VolumeOperationInProgress(instance_uuid=inst.uuid)


def attachments_of(session: Session, instance_uuid: str) -> list[VolumeAttachment]:
    return list(
        session.scalars(
            select(VolumeAttachment)
            .where(VolumeAttachment.instance_uuid == instance_uuid)
            .order_by(VolumeAttachment.id)
        )
    )


def _device(session: Session, inst: Instance, asked: str | None) -> str:
    """The guest device of a new attachment: the one asked for, or the first free one."""
    # The local disks come first, as the flavor has them: root, ephemeral, swap.
    flavor = inst.flavor
    local = 1 + (int(flavor.get("ephemeral_gb", 0)) > 0) + (int(flavor.get("swap", 0) or 0) > 0)
    taken = {a.device for a in attachments_of(session, inst.uuid)}
    taken |= {f"/dev/vd{letter}" for letter in "abc"[:local]}
    if asked is not None:
        if not _DEVICE.match(asked):
            raise InvalidDevicePath(path=asked)
        if asked in taken:
            raise DevicePathInUse(path=asked)
        return asked
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if f"/dev/vd{letter}" not in taken:
            return f"/dev/vd{letter}"
    raise errors.Invalid("The server has no free device for another volume.")


def reserve(
    session: Session, caller: RequestContext, inst: Instance, bd: BlockDevice
) -> VolumeAttachment:
    """Reserve ``bd``'s volume for ``inst`` (Cinder's ``reserved``) and record its attachment.

    A volume of another project is not found, as Cinder answers Nova acting
    for the caller; one attached already, or not ``available``, is refused.
    """
    volume = session.get(Volume, bd.volume_id, with_for_update=True)
    if volume is None or (not caller.is_admin and volume.project_id != caller.project_id):
        raise errors.VolumeNotFound(volume_id=bd.volume_id)
    mine = session.scalar(
        select(VolumeAttachment.id).where(
            VolumeAttachment.volume_id == bd.volume_id,
            VolumeAttachment.instance_uuid == inst.uuid,
        )
    )
    if mine is not None:
        raise errors.InvalidVolume(reason=f"volume {bd.volume_id} already attached")
    if volume.status != "available":
        raise errors.InvalidVolume(
            reason=f"Volume {bd.volume_id} status must be available to reserve, "
            f"but the current status is {volume.status}."
        )
    volume.status, volume.updated_at = "reserved", utcnow()
    row = VolumeAttachment(
        volume_id=bd.volume_id,
        instance_uuid=inst.uuid,
        device=_device(session, inst, bd.device),
        attach_status="reserved",
        attach_mode="rw",
        bdm_uuid=str(uuidlib.uuid4()),
        tag=bd.tag,
        delete_on_termination=bd.delete_on_termination,
        boot_index=bd.boot_index,
    )
    session.add(row)
    session.flush()
    return row


class VolumeOps(Launcher):
    """The compute API's volume methods (a part of :class:`~resizeflow.compute.api.ComputeAPI`)."""

    def _server(self, caller: RequestContext, session: Session, uuid: str, rule: str) -> Instance:
        inst = visible_instance(session, caller, uuid)
        authorize(caller, f"compute:volume_attachments:{rule}", inst.project_id)
        return inst

    def volume_attachments(self, caller: RequestContext, uuid: str) -> list[AttachmentView]:
        with self.db.snapshot() as s:
            inst = self._server(caller, s, uuid, "index")
            return [AttachmentView.of(a) for a in attachments_of(s, inst.uuid)]

    def volume_attachment(
        self, caller: RequestContext, uuid: str, volume_id: str
    ) -> AttachmentView:
        with self.db.snapshot() as s:
            inst = self._server(caller, s, uuid, "show")
            for found in attachments_of(s, inst.uuid):
                if found.volume_id == volume_id:
                    return AttachmentView.of(found)
        raise errors.NotFound(f"Instance {uuid} is not attached to volume {volume_id}")

    def attach_volume(self, caller: RequestContext, uuid: str, bd: BlockDevice) -> AttachmentView:
        """Reserve the volume and journal its attach on the server's host; the device."""
        with self._launching() as (s, launches):
            inst = self._volume_op(caller, s, uuid, "create", "attach_volume")
            row = reserve(s, caller, inst, bd)
            self._launch(caller, s, inst, "attach_volume", flows.ATTACH_VOLUME, launches)
            return AttachmentView.of(row)

    def detach_volume(self, caller: RequestContext, uuid: str, volume_id: str) -> None:
        """Mark the attachment ``detaching`` and journal its detach on the server's host."""
        with self._launching() as (s, launches):
            inst = self._volume_op(caller, s, uuid, "delete", "detach_volume")
            volume = s.get(Volume, volume_id, with_for_update=True)
            if volume is None or (not caller.is_admin and volume.project_id != caller.project_id):
                raise errors.VolumeNotFound(volume_id=volume_id)
            row = s.scalar(
                select(VolumeAttachment).where(
                    VolumeAttachment.volume_id == volume_id,
                    VolumeAttachment.instance_uuid == inst.uuid,
                )
            )
            if row is None:
                raise errors.NotFound(f"Instance {uuid} is not attached to volume {volume_id}")
            if row.boot_index == 0:
                raise errors.Invalid("Cannot detach a root device volume")
            row.attach_status = "detaching"
            mark_detaching(s, volume_id)
            self._launch(caller, s, inst, "detach_volume", flows.DETACH_VOLUME, launches)

    def _volume_op(
        self, caller: RequestContext, s: Session, uuid: str, rule: str, method: str
    ) -> Instance:
        inst = self._server(caller, s, uuid, rule)
        # The instance first, as every step locks it.
        s.refresh(inst, with_for_update={"key_share": True})
        check_instance_lock(caller, inst)
        check_instance_state(inst, method, vm_state=VOLUME_VM_STATES)
        check_no_volume_operation(s, inst)
        return inst

    @staticmethod
    def _launch(
        caller: RequestContext,
        s: Session,
        inst: Instance,
        action: str,
        flow: flows.Flow,
        launches: list[Launch],
    ) -> None:
        record = record_action(caller, s, inst, action)
        launches.append(plan(caller, s, flow, inst, record))


def _dev(name: Any) -> str | None:
    if not name:
        return None
    name = str(name)
    return name if name.startswith("/dev/") else f"/dev/{name}"


def boot_volumes(mappings: Sequence[dict[str, Any]] | None) -> tuple[BlockDevice, ...]:
    """The data volumes of a ``block_device_mapping_v2`` (source and destination ``volume``).

    The image a server boots from may be listed too (source ``image``,
    destination ``local``, boot index 0); a volume to boot from is not
    something resizeflow's servers do, and is refused.
    """
    found = []
    for bdm in mappings or ():
        source, dest = bdm.get("source_type"), bdm.get("destination_type", "volume")
        if source == "image" and dest == "local":
            continue
        if source != "volume" or dest != "volume":
            raise errors.Invalid(
                f"Block device mapping of source_type {source} and destination_type "
                f"{dest} is not supported: only volumes attached as data disks are."
            )
        index = bdm.get("boot_index")
        boot_index = None if index in (None, "none", "None") else int(index)
        if boot_index == 0:
            raise errors.Invalid("Booting from a volume is not supported: boot from an image.")
        volume_id = bdm.get("uuid") or bdm.get("volume_id")
        if not volume_id:
            raise errors.Invalid("Block device mapping of a volume needs its uuid.")
        found.append(
            BlockDevice(
                volume_id=str(volume_id),
                device=_dev(bdm.get("device_name")),
                tag=bdm.get("tag"),
                delete_on_termination=bool(bdm.get("delete_on_termination", False)),
                boot_index=boot_index if boot_index is not None and boot_index >= 0 else None,
            )
        )
    return tuple(found)
