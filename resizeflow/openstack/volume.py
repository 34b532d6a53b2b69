"""Volume attachments and their host connections, as rows in the step's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from resizeflow.db import api as dbapi
from resizeflow.db.models import VolumeAttachment


class SqlVolumes:
    """The volume driver of one transaction, or of one step's transactions.

    Which volumes an instance has attached, and on which device, is read
    once and remembered (see :meth:`attached`); the connections, which the
    steps change, are read afresh each time.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self._attached: dict[str, tuple[tuple[str, str], ...]] = {}

    def _attachments(self, instance_uuid: str) -> list[VolumeAttachment]:
        found = list(
            self.session.scalars(
                select(VolumeAttachment).where(VolumeAttachment.instance_uuid == instance_uuid)
            )
        )
        self._attached[instance_uuid] = tuple((a.volume_id, a.device or "") for a in found)
        return found

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
            self._attachments(instance_uuid)
            found = self._attached[instance_uuid]
        return found

    def initialize_connections(self, instance_uuid: str, host: str) -> None:
        if not self.attached(instance_uuid):
            return  # nothing attached: no need to read the connections
        for att in self._attachments(instance_uuid):
            att.connected_host = host
            att.connection_info = {
                "driver_volume_type": "iscsi",
                "data": {"volume_id": att.volume_id, "host": host},
            }

    def terminate_connections(self, instance_uuid: str, host: str) -> None:
        if not self.attached(instance_uuid):
            return
        for att in self._attachments(instance_uuid):
            if att.connected_host == host:
                att.connected_host = None
                att.connection_info = None

    def detach_all(self, instance_uuid: str) -> None:
        self._attached.pop(instance_uuid, None)
        self.session.execute(
            delete(VolumeAttachment).where(VolumeAttachment.instance_uuid == instance_uuid)
        )
