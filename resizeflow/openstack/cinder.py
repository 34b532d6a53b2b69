"""Cinder's side of volumes: their records, their status machine, their attachments.

The Block Storage API (:mod:`resizeflow.api.routes.volumes`) and Nova's side
(the compute API and the steps that move connections) call this one service.
The data plane is a :class:`~resizeflow.storage.base.BlockStorage`; this
module never reaches a daemon itself.

A volume's ``status`` moves as Cinder's does with its attachments API::

    creating -> available -> reserved -> attaching -> in-use -> detaching -> available
                          (reserve)    (connect)     (complete) (detach)

Each change is a compare-and-set on the status the request expects, so two
requests cannot both reserve, or reserve and delete, one volume. Every
operation is idempotent: a step that is delivered again calls it again.
Storage is changed before the record that describes it, so a crash in between
leaves a record that the repeated call completes, never a connection that no
record names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.conf import Settings
from resizeflow.db.models import Instance, Volume, VolumeAttachment, utcnow
from resizeflow.db.session import Database
from resizeflow.storage.base import GIB, BlockStorage, ConnectionInfo
from resizeflow.storage.client import RemoteStorage

# Cinder's statuses that a volume may be deleted in.
DELETABLE = ("available", "error", "error_deleting")
DELETE_REFUSED = (
    "Volume status must be available or error or error_restoring or error_extending or "
    "error_managing and must not be migrating, attached, belong to a group, have snapshots, "
    "awaiting a transfer, or be disassociated from snapshots after volume transfer."
)


@dataclass(frozen=True)
class AttachmentInfo:
    id: str
    volume_id: str
    instance_uuid: str
    attach_status: str  # reserved, attaching, attached, detaching
    attach_mode: str
    device: str | None
    connected_host: str | None
    connection_info: dict[str, Any] | None
    created_at: dt.datetime
    attached_at: dt.datetime | None

    @classmethod
    def of(cls, row: VolumeAttachment) -> AttachmentInfo:
        return cls(
            id=row.attachment_id,
            volume_id=row.volume_id,
            instance_uuid=row.instance_uuid,
            attach_status=row.attach_status,
            attach_mode=row.attach_mode,
            device=row.device,
            connected_host=row.connected_host,
            connection_info=row.connection_info,
            created_at=row.created_at,
            attached_at=row.attached_at,
        )


@dataclass(frozen=True)
class VolumeInfo:
    id: str
    project_id: str
    user_id: str
    name: str | None
    description: str | None
    size: int
    status: str
    attach_status: str
    storage_host: str
    created_at: dt.datetime
    updated_at: dt.datetime | None
    attachments: tuple[AttachmentInfo, ...]


class VolumeService:
    """Volumes of one storage host, for every project.

    ``project_id`` arguments scope a request to one project (a volume of
    another project is not found); None is the caller that sees every
    project (an admin, or Nova's side acting for an instance it owns).
    """

    def __init__(self, db: Database, storage: BlockStorage, storage_host: str) -> None:
        self.db = db
        self.storage = storage
        self.storage_host = storage_host

    # -- reading ------------------------------------------------------------------
    def _volume(self, s: Session, volume_id: str, project_id: str | None) -> Volume:
        row = s.get(Volume, volume_id)
        if row is None or (project_id is not None and row.project_id != project_id):
            raise errors.VolumeNotFound(volume_id=volume_id)
        return row

    @staticmethod
    def _attachment_row(s: Session, attachment_id: str) -> VolumeAttachment | None:
        return s.scalar(
            select(VolumeAttachment).where(VolumeAttachment.attachment_id == attachment_id)
        )

    def _attachment(
        self, s: Session, attachment_id: str, project_id: str | None
    ) -> VolumeAttachment:
        row = self._attachment_row(s, attachment_id)
        if row is None:
            raise errors.VolumeAttachmentNotFound(attachment_id=attachment_id)
        if project_id is not None:
            volume = s.get(Volume, row.volume_id)
            if volume is None or volume.project_id != project_id:
                raise errors.VolumeAttachmentNotFound(attachment_id=attachment_id)
        return row

    @staticmethod
    def _attachments_query(
        project_id: str | None = None,
        *,
        volume_id: str | None = None,
        instance_uuid: str | None = None,
    ) -> Select[VolumeAttachment]:
        query = select(VolumeAttachment).order_by(VolumeAttachment.id)
        if project_id is not None:
            query = query.join(Volume, Volume.id == VolumeAttachment.volume_id).where(
                Volume.project_id == project_id
            )
        if volume_id is not None:
            query = query.where(VolumeAttachment.volume_id == volume_id)
        if instance_uuid is not None:
            query = query.where(VolumeAttachment.instance_uuid == instance_uuid)
        return query

    @staticmethod
    def _info(row: Volume, attachments: Iterable[VolumeAttachment]) -> VolumeInfo:
        return VolumeInfo(
            id=row.id,
            project_id=row.project_id,
            user_id=row.user_id,
            name=row.name,
            description=row.description,
            size=row.size,
            status=row.status,
            attach_status=row.attach_status,
            storage_host=row.storage_host,
            created_at=row.created_at,
            updated_at=row.updated_at,
            attachments=tuple(AttachmentInfo.of(a) for a in attachments),
        )

    def get(self, volume_id: str, project_id: str | None = None) -> VolumeInfo:
        with self.db.snapshot() as s:
            row = self._volume(s, volume_id, project_id)
            return self._info(row, s.scalars(self._attachments_query(volume_id=row.id)))

    def volumes(self, project_id: str | None = None) -> list[VolumeInfo]:
        """Newest first, as Cinder sorts by default."""
        with self.db.snapshot() as s:
            query = select(Volume).order_by(Volume.created_at.desc(), Volume.id.desc())
            if project_id is not None:
                query = query.where(Volume.project_id == project_id)
            rows = list(s.scalars(query))
            # One query for every listed volume's attachments, not one per volume.
            of_volume: dict[str, list[VolumeAttachment]] = defaultdict(list)
            for att in s.scalars(self._attachments_query(project_id)):
                of_volume[att.volume_id].append(att)
            return [self._info(row, of_volume[row.id]) for row in rows]

    def attachment(self, attachment_id: str, project_id: str | None = None) -> AttachmentInfo:
        with self.db.snapshot() as s:
            return AttachmentInfo.of(self._attachment(s, attachment_id, project_id))

    def attachments(
        self,
        project_id: str | None = None,
        *,
        volume_id: str | None = None,
        instance_uuid: str | None = None,
    ) -> list[AttachmentInfo]:
        query = self._attachments_query(
            project_id, volume_id=volume_id, instance_uuid=instance_uuid
        )
        with self.db.snapshot() as s:
            return [AttachmentInfo.of(a) for a in s.scalars(query)]

    def connections(self, volume_id: str) -> list[str]:
        """The hosts that can reach the volume now, as the storage host answers."""
        return self.storage.connections(volume_id)

    # -- volumes ------------------------------------------------------------------
    def create(
        self,
        project_id: str,
        user_id: str,
        size: int,
        name: str | None = None,
        description: str | None = None,
    ) -> VolumeInfo:
        """A new volume, ``available`` once the storage host made it (``error`` if it failed).

        A volume larger than the storage host's free space is refused before
        anything is recorded (Cinder would record it and put it in error).
        """
        if size < 1:
            raise errors.Invalid("Volume size must be an integer and greater than 0")
        capacity = self.storage.capacity()
        if size * GIB > capacity.free_bytes:
            raise errors.VolumeSizeExceedsFreeSpace(
                size=size, host=self.storage_host, free=capacity.free_gb
            )
        volume_id = str(uuid.uuid4())
        with self.db.transaction() as s:
            s.add(
                Volume(
                    id=volume_id,
                    project_id=project_id,
                    user_id=user_id,
                    name=name,
                    description=description,
                    size=size,
                    status="creating",
                    attach_status="detached",
                    storage_host=self.storage_host,
                )
            )
        try:
            self.storage.create_volume(volume_id, size)
        except errors.ResizeflowError:
            self._set_status(volume_id, "error")
            raise
        self._set_status(volume_id, "available", expect=("creating",))
        return self.get(volume_id)

    def update(
        self,
        volume_id: str,
        project_id: str | None,
        changes: dict[str, str | None],
    ) -> VolumeInfo:
        """Change a volume's ``name`` and ``description`` (the keys present in ``changes``)."""
        with self.db.transaction() as s:
            row = self._volume(s, volume_id, project_id)
            for key in ("name", "description"):
                if key in changes:
                    setattr(row, key, changes[key])
            row.updated_at = utcnow()
        return self.get(volume_id)

    def delete(self, volume_id: str, project_id: str | None = None) -> None:
        """Delete an unattached volume and its data; an attached one is refused (400)."""
        with self.db.transaction() as s:
            self._volume(s, volume_id, project_id)
            attached = s.scalar(
                select(func.count())
                .select_from(VolumeAttachment)
                .where(VolumeAttachment.volume_id == volume_id)
            )
            if attached or not self._cas(s, volume_id, "deleting", DELETABLE):
                raise errors.InvalidVolume(reason=DELETE_REFUSED)
        try:
            self.storage.delete_volume(volume_id)
        except errors.ResizeflowError:
            self._set_status(volume_id, "error_deleting")
            raise
        with self.db.transaction() as s:
            found = s.get(Volume, volume_id)
            if found is not None:
                s.delete(found)

    # -- attachments (Cinder's attachments API; Nova's side calls these) ------------
    def reserve(
        self, volume_id: str, instance_uuid: str, project_id: str | None = None
    ) -> AttachmentInfo:
        """Reserve ``volume_id`` for an instance: the volume goes ``reserved``.

        Reserving it again for the same instance answers the same attachment.
        """
        with self.db.transaction() as s:
            volume = self._volume(s, volume_id, project_id)
            existing = s.scalar(
                select(VolumeAttachment).where(
                    VolumeAttachment.volume_id == volume_id,
                    VolumeAttachment.instance_uuid == instance_uuid,
                )
            )
            if existing is not None:
                return AttachmentInfo.of(existing)
            if s.get(Instance, instance_uuid) is None:
                raise errors.InstanceNotFound(instance_id=instance_uuid)
            if not self._cas(s, volume_id, "reserved", ("available",)):
                raise errors.InvalidVolume(
                    reason=f"Volume {volume_id} status must be available to reserve, "
                    f"but the current status is {volume.status}."
                )
            row = VolumeAttachment(
                volume_id=volume_id,
                instance_uuid=instance_uuid,
                attach_status="reserved",
                attach_mode="rw",
            )
            s.add(row)
            s.flush()
            return AttachmentInfo.of(row)

    def connect(
        self,
        attachment_id: str,
        host: str,
        *,
        mountpoint: str | None = None,
        connector: dict[str, Any] | None = None,
        project_id: str | None = None,
    ) -> ConnectionInfo:
        """Connect the attachment's volume to ``host`` and answer its connection_info.

        An attachment holds one connection: one to another host is terminated
        first, so a volume never stays reachable from a host it left. A
        reserved volume goes ``attaching``; an attached one stays ``in-use``.
        """
        with self.db.snapshot() as s:
            row = self._attachment(s, attachment_id, project_id)
            volume_id, old = row.volume_id, row.connected_host
        if old is not None and old != host:
            self.storage.terminate_connection(volume_id, old)
        info = self.storage.initialize_connection(volume_id, host)
        with self.db.transaction() as s:
            row = self._attachment(s, attachment_id, None)
            row.connected_host = host
            row.connection_info = info.to_dict()
            if connector is not None:
                row.connector = connector
            if mountpoint is not None:
                row.device = mountpoint
            if row.attach_status == "reserved":
                row.attach_status = "attaching"
                mark_attaching(s, volume_id)
        return info

    def complete(self, attachment_id: str, project_id: str | None = None) -> AttachmentInfo:
        """The guest has the volume: the attachment is ``attached``, the volume ``in-use``."""
        with self.db.transaction() as s:
            row = self._attachment(s, attachment_id, project_id)
            if row.attach_status != "attached":
                row.attach_status = "attached"
                row.attached_at = utcnow()
            s.execute(
                update(Volume)
                .where(Volume.id == row.volume_id, Volume.status.in_(("reserved", "attaching")))
                .values(status="in-use", attach_status="attached", updated_at=utcnow())
            )
            return AttachmentInfo.of(row)

    def disconnect(self, attachment_id: str, host: str) -> None:
        """Terminate ``host``'s connection to the attachment's volume; the volume stays attached.

        A no-op when the attachment is gone or holds no connection for ``host``
        (the storage host is asked anyway, so nothing is left behind).
        """
        with self.db.snapshot() as s:
            row = self._attachment_row(s, attachment_id)
            if row is None:
                return
            volume_id = row.volume_id
        self.storage.terminate_connection(volume_id, host)
        with self.db.transaction() as s:
            s.execute(
                update(VolumeAttachment)
                .where(
                    VolumeAttachment.attachment_id == attachment_id,
                    VolumeAttachment.connected_host == host,
                )
                .values(connected_host=None, connection_info=None)
            )

    def detach(self, attachment_id: str) -> None:
        """Remove the attachment and its connection; the volume is ``available`` when none is left.

        A no-op when the attachment is gone already.
        """
        with self.db.transaction() as s:
            row = self._attachment_row(s, attachment_id)
            if row is None:
                return
            volume_id, host = row.volume_id, row.connected_host
            row.attach_status = "detaching"
            mark_detaching(s, volume_id)
        if host is not None:
            self.storage.terminate_connection(volume_id, host)
        with self.db.transaction() as s:
            found = self._attachment_row(s, attachment_id)
            if found is not None:
                s.delete(found)
                s.flush()
            settle(s, volume_id)

    # -- status -------------------------------------------------------------------
    @staticmethod
    def _cas(s: Session, volume_id: str, status: str, expect: Sequence[str]) -> bool:
        done = s.execute(
            update(Volume)
            .where(Volume.id == volume_id, Volume.status.in_(expect))
            .values(status=status, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(done, "rowcount", 0))

    def _set_status(self, volume_id: str, status: str, expect: Sequence[str] = ()) -> None:
        with self.db.transaction() as s:
            query = update(Volume).where(Volume.id == volume_id)
            if expect:
                query = query.where(Volume.status.in_(expect))
            s.execute(query.values(status=status, updated_at=utcnow()))


def mark_attaching(s: Session, volume_id: str) -> None:
    """A reserved volume is being connected: ``attaching``, in the caller's transaction."""
    s.execute(
        update(Volume)
        .where(Volume.id == volume_id, Volume.status == "reserved")
        .values(status="attaching", attach_status="attaching", updated_at=utcnow())
    )


def mark_detaching(s: Session, volume_id: str) -> None:
    """A volume's attachment is on its way out: ``detaching``, in the caller's transaction."""
    s.execute(
        update(Volume)
        .where(Volume.id == volume_id)
        .values(status="detaching", attach_status="detaching", updated_at=utcnow())
    )


def settle(s: Session, volume_id: str) -> None:
    """A volume's status from the attachments it has left, in the caller's transaction.

    Nova's side calls this too, in the step that removes or completes an attachment.
    """
    left = list(
        s.scalars(
            select(VolumeAttachment.attach_status).where(VolumeAttachment.volume_id == volume_id)
        )
    )
    if not left:
        status, attach = "available", "detached"
    elif "attached" in left:
        status, attach = "in-use", "attached"
    else:
        status, attach = "reserved", "detached"
    s.execute(
        update(Volume)
        .where(Volume.id == volume_id)
        .values(status=status, attach_status=attach, updated_at=utcnow())
    )


def volume_service(settings: Settings, db: Database, app: Celery) -> VolumeService:
    """The service on the deployment's storage host, reached over ``app``'s broker."""
    storage = RemoteStorage(app, settings.storage_host, settings.host_call_timeout)
    return VolumeService(db, storage, settings.storage_host)
