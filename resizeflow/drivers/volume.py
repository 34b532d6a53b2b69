"""Volume attachments and their host connections, as rows in the step's transaction."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from resizeflow.db.models import VolumeAttachment


class SqlVolumes:
    def __init__(self, session: Session) -> None:
        self.session = session

    def _attachments(self, instance_uuid: str) -> list[VolumeAttachment]:
        return list(
            self.session.scalars(
                select(VolumeAttachment).where(VolumeAttachment.instance_uuid == instance_uuid)
            )
        )

    def initialize_connections(self, instance_uuid: str, host: str) -> None:
        for att in self._attachments(instance_uuid):
            att.connected_host = host
            att.connection_info = {
                "driver_volume_type": "iscsi",
                "data": {"volume_id": att.volume_id, "host": host},
            }

    def terminate_connections(self, instance_uuid: str, host: str) -> None:
        for att in self._attachments(instance_uuid):
            if att.connected_host == host:
                att.connected_host = None
                att.connection_info = None

    def detach_all(self, instance_uuid: str) -> None:
        self.session.execute(
            delete(VolumeAttachment).where(VolumeAttachment.instance_uuid == instance_uuid)
        )
