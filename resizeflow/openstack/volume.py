"""Nova's side of an instance's volumes: its attachments, and the host connections they hold.

The attachments are Cinder's (:mod:`resizeflow.openstack.cinder` keeps their
status machine); a step reads and records them in its own transaction, and
reaches the volumes themselves through the storage host's client
(:class:`~resizeflow.storage.base.BlockStorage`).

A connection is an effect outside the database, so its record and the effect
are ordered for a redelivery to converge:

- a connection is *recorded before it is made* (:meth:`InstanceVolumes.record_connecting`,
  committed with a step's first phase): a step that dies in between leaves a
  record naming a host that may not be connected yet, which the redelivery
  connects, and never a connection that no record names;
- a connection is *terminated before its record is cleared*
  (:meth:`InstanceVolumes.record_disconnected`, after the storage call): a
  step that dies in between leaves a record naming a host whose connection is
  gone, which the redelivery terminates again, a no-op.

Initializing and terminating are idempotent on the storage host, so the
repeats add nothing and leave nothing behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db import api as dbapi
from resizeflow.db.models import Volume, VolumeAttachment, utcnow
from resizeflow.openstack.cinder import mark_attaching, settle
from resizeflow.storage.base import BlockStorage


@dataclass(frozen=True)
class Attached:
    """One volume of an instance, as a step read it: what its hypervisor work needs."""

    attachment_id: str
    volume_id: str
    device: str  # the guest's device, without /dev/ (vdb)
    attach_status: str  # reserved, attaching, attached, detaching
    connected_host: str | None
    delete_on_termination: bool = False

    @classmethod
    def of(cls, row: VolumeAttachment) -> Attached:
        return cls(
            attachment_id=row.attachment_id,
            volume_id=row.volume_id,
            device=(row.device or "").removeprefix("/dev/"),
            attach_status=row.attach_status,
            connected_host=row.connected_host,
            delete_on_termination=bool(row.delete_on_termination),
        )


def connect(storage: BlockStorage | None, volumes: Sequence[Attached], host: str) -> dict[str, Any]:
    """Connect ``host`` to each volume; the volume id to its ``connection_info``.

    Touches no row: it runs in a step's hypervisor phase.
    """
    if not volumes:
        return {}
    store = _required(storage)
    return {
        vol.volume_id: store.initialize_connection(vol.volume_id, host).to_dict() for vol in volumes
    }


def disconnect(storage: BlockStorage | None, volumes: Sequence[Attached], host: str) -> None:
    """Terminate ``host``'s connection to each volume (a no-op where it has none)."""
    if not volumes:
        return
    store = _required(storage)
    for vol in volumes:
        store.terminate_connection(vol.volume_id, host)


def delete_volumes(storage: BlockStorage | None, volumes: Sequence[Attached]) -> None:
    """Remove each volume and its data from the storage host (a no-op where it is gone)."""
    if not volumes:
        return
    store = _required(storage)
    for vol in volumes:
        store.delete_volume(vol.volume_id)


def _required(storage: BlockStorage | None) -> BlockStorage:
    if storage is None:
        raise errors.ConfigError("this process has no storage host client; volumes need one")
    return storage


class InstanceVolumes:
    """An instance's attachments, in one step's transaction (or one request's).

    Which volumes an instance has attached, and on which device, is read
    once and remembered for its notifications (see :meth:`attached`); the
    attachments a step acts on (:meth:`of`) are read afresh each time.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._attached: dict[str, tuple[tuple[str, str], ...]] = {}

    # -- what notifications say -------------------------------------------------------
    @staticmethod
    def attached_column(dialect: str, instance_uuid: Any) -> Any:
        """A column that reads what :meth:`attached` answers for ``instance_uuid``
        (a column of the statement) in another statement's round trip."""
        return dbapi.json_rows(
            dialect,
            VolumeAttachment.instance_uuid == instance_uuid,
            VolumeAttachment.volume_id,
            VolumeAttachment.device,
        )

    def remember(self, instance_uuid: str, read: list[list[str]] | None) -> None:
        """Take the attachments read by :meth:`attached_column` as read here."""
        self._attached[instance_uuid] = tuple(
            (volume, device or "") for volume, device in read or ()
        )

    def attached(self, instance_uuid: str) -> tuple[tuple[str, str], ...]:
        """The instance's (volume id, device) pairs."""
        found = self._attached.get(instance_uuid)
        if found is None:
            found = tuple((a.volume_id, a.device or "") for a in self._rows(instance_uuid))
            self._attached[instance_uuid] = found
        return found

    # -- what steps act on -------------------------------------------------------------
    def _rows(self, instance_uuid: str, *status: str) -> list[VolumeAttachment]:
        query = (
            select(VolumeAttachment)
            .where(VolumeAttachment.instance_uuid == instance_uuid)
            .order_by(VolumeAttachment.id)
        )
        if status:
            query = query.where(VolumeAttachment.attach_status.in_(status))
        return list(self.session.scalars(query))

    def of(self, instance_uuid: str, *status: str) -> tuple[Attached, ...]:
        """The instance's attachments (those in ``status``, if given), oldest first."""
        return tuple(Attached.of(row) for row in self._rows(instance_uuid, *status))

    def record_connecting(self, volumes: Sequence[Attached], host: str) -> None:
        """Name ``host`` as connected before the connection is made (see the module)."""
        for vol in volumes:
            self._set(vol, connected_host=host)

    def record_connected(
        self, volumes: Sequence[Attached], host: str, infos: Mapping[str, Any]
    ) -> None:
        """The connection_info each volume has on ``host``, once made."""
        for vol in volumes:
            self._set(vol, connected_host=host, connection_info=infos[vol.volume_id])

    def record_disconnected(self, volumes: Sequence[Attached], host: str) -> None:
        """Clear ``host``'s connections from the record, once terminated."""
        ids = [vol.attachment_id for vol in volumes]
        if ids:
            self.session.execute(
                update(VolumeAttachment)
                .where(
                    VolumeAttachment.attachment_id.in_(ids),
                    VolumeAttachment.connected_host == host,
                )
                .values(connected_host=None, connection_info=None)
            )

    def record_devices(self, devices: Mapping[str, str]) -> None:
        """The guest device each volume (by id) is at, as the hypervisor placed it."""
        for volume_id, device in devices.items():
            self.session.execute(
                update(VolumeAttachment)
                .where(VolumeAttachment.volume_id == volume_id)
                .values(device=f"/dev/{device}")
            )

    def record_attaching(self, volumes: Sequence[Attached]) -> None:
        """An attach has begun: the attachments and their volumes ``attaching``."""
        for vol in volumes:
            self._set(vol, attach_status="attaching")
            mark_attaching(self.session, vol.volume_id)

    def record_attached(self, volumes: Sequence[Attached]) -> None:
        """The guest has them: each attachment ``attached``, its volume ``in-use``."""
        now = utcnow()
        for vol in volumes:
            if vol.attach_status != "attached":
                self._set(vol, attach_status="attached", attached_at=now)
            settle(self.session, vol.volume_id)

    def record_detached(self, volumes: Sequence[Attached]) -> None:
        """The attachments are gone (their connections terminated): each volume
        is ``available`` again, with its data."""
        ids = [vol.attachment_id for vol in volumes]
        if not ids:
            return
        self.session.execute(
            sql_delete(VolumeAttachment).where(VolumeAttachment.attachment_id.in_(ids))
        )
        for vol in volumes:
            settle(self.session, vol.volume_id)

    def record_deleted(self, volumes: Sequence[Attached]) -> None:
        """The volumes are gone from the storage host: their records go too."""
        ids = [vol.volume_id for vol in volumes]
        if ids:
            self.session.execute(sql_delete(Volume).where(Volume.id.in_(ids)))

    def _set(self, vol: Attached, **values: Any) -> None:
        self.session.execute(
            update(VolumeAttachment)
            .where(VolumeAttachment.attachment_id == vol.attachment_id)
            .values(**values)
        )
