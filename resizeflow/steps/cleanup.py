"""Cleaning up after a migration that errored out and whose server is gone."""

from __future__ import annotations

from sqlalchemy.orm import Session

from resizeflow.db.models import Migration
from resizeflow.openstack.placement import SqlPlacement
from resizeflow.states import MigrationStatus, check_migration
from resizeflow.virt.base import VirtDriver


def purge_instance_files(virt: VirtDriver, instance_uuid: str) -> list[str]:
    """Remove this host's domain and directories of a deleted server."""
    return virt.purge(instance_uuid)


def fail_migration(session: Session, mig: Migration) -> None:
    """After both hosts are clean: free the migration's claim and mark it ``failed``."""
    if mig.status != MigrationStatus.ERROR:
        return
    SqlPlacement(session).release_everywhere(mig.uuid)
    mig.status = check_migration(mig.status, MigrationStatus.FAILED)
