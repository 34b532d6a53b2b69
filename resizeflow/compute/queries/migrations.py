"""Migrations: Nova's os-migrations list, one server's, and the step journal of one."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.compute.queries.base import Reader
from resizeflow.compute.queries.hosts import host_ip
from resizeflow.compute.queries.infos import (
    MarkerNotFound,
    MigrationFilters,
    MigrationInfo,
    Page,
    StepInfo,
)
from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.instances import visible_instance
from resizeflow.db.models import Migration, StepJournal
from resizeflow.states import MigrationStatus


class MigrationQueries(Reader):
    def migrations(
        self,
        caller: RequestContext,
        filters: MigrationFilters = MigrationFilters(),
        page: Page = Page(),
    ) -> list[MigrationInfo]:
        authorize(caller, "compute:migrations:index")
        stmt = select(Migration)
        if filters.instance_uuid is not None:
            stmt = stmt.where(Migration.instance_uuid == filters.instance_uuid)
        if filters.status is not None:
            if filters.status not in {m.value for m in MigrationStatus}:
                return []  # no migration can be in a status that does not exist
            stmt = stmt.where(Migration.status == MigrationStatus(filters.status))
        if filters.hidden:
            return []
        if filters.host is not None:
            stmt = stmt.where(
                or_(
                    Migration.source_compute == filters.host, Migration.dest_compute == filters.host
                )
            )
        elif filters.source_compute is not None:
            stmt = stmt.where(Migration.source_compute == filters.source_compute)
        if filters.migration_type is not None:
            stmt = stmt.where(Migration.migration_type == filters.migration_type)
        if filters.user_id is not None:
            stmt = stmt.where(Migration.user_id == filters.user_id)
        if filters.project_id is not None:
            stmt = stmt.where(Migration.project_id == filters.project_id)
        if page.changes_since is not None:
            stmt = stmt.where(Migration.updated_at >= page.changes_since)
        if page.changes_before is not None:
            stmt = stmt.where(Migration.updated_at <= page.changes_before)
        with self.db.snapshot() as s:
            if filters.marker is not None:
                # Nova pages migrations newest first, by id, from the marker's uuid.
                mark = s.scalars(select(Migration).where(Migration.uuid == filters.marker)).first()
                if mark is None:
                    raise MarkerNotFound(marker=filters.marker)
                stmt = stmt.where(Migration.id < mark.id)
            stmt = stmt.order_by(Migration.id.desc())
            if page.limit is not None:
                stmt = stmt.limit(page.limit)
            return [_migration(s, m) for m in s.scalars(stmt)]

    def migration(self, caller: RequestContext, migration_id: int) -> MigrationInfo:
        authorize(caller, "compute:migrations:index")
        if not 0 < migration_id < 2**31:
            raise errors.MigrationNotFound(migration_id=migration_id)
        with self.db.snapshot() as s:
            return _migration(s, dbapi.get_migration(s, migration_id))

    def server_migration(self, instance_uuid: str, migration_id: str) -> MigrationInfo | None:
        """A migration of this server by id, or None (the caller has checked the policy)."""
        if not migration_id.isdigit() or not 0 < int(migration_id) < 2**31:
            return None
        with self.db.snapshot() as s:
            mig = s.get(Migration, int(migration_id))
            if mig is None or mig.instance_uuid != instance_uuid:
                return None
            return _migration(s, mig)

    def workflow(self, caller: RequestContext, migration_id: int) -> list[StepInfo]:
        """The step journal of a migration, every flow it ran, in order."""
        authorize(caller, "compute:workflows:show")
        if not 0 < migration_id < 2**31:
            raise errors.MigrationNotFound(migration_id=migration_id)
        with self.db.snapshot() as s:
            dbapi.get_migration(s, migration_id)
            rows = sorted(journal.rows(s, migration_id), key=lambda r: (r.enqueued_at, r.position))
            return [_step(r) for r in rows]

    def latest_migration(self, caller: RequestContext, instance_uuid: str) -> MigrationInfo | None:
        """The newest migration of a server its caller may see."""
        with self.db.snapshot() as s:
            visible_instance(s, caller, instance_uuid)
            mig = s.scalars(
                select(Migration)
                .where(Migration.instance_uuid == instance_uuid)
                .order_by(Migration.id.desc())
                .limit(1)
            ).first()
            return None if mig is None else _migration(s, mig)


def _migration(session: Session, m: Migration) -> MigrationInfo:
    return MigrationInfo(
        id=m.id,
        uuid=m.uuid,
        instance_uuid=m.instance_uuid,
        migration_type=m.migration_type,
        status=m.status.value,
        source_compute=m.source_compute,
        source_node=m.source_node,
        dest_compute=m.dest_compute,
        dest_node=m.dest_node,
        old_instance_type_id=m.old_instance_type_id,
        new_instance_type_id=m.new_instance_type_id,
        created_at=m.created_at,
        updated_at=m.updated_at,
        user_id=m.user_id,
        project_id=m.project_id,
        # NOTE: Nova records the dest's my_ip on the migration when the dest
        # claims it; resizeflow reads the address the dest host advertises now.
        dest_host=None if m.dest_compute is None else host_ip(session, m.dest_compute),
    )


def _step(r: StepJournal) -> StepInfo:
    return StepInfo(
        flow=r.flow,
        step=r.step,
        position=r.position,
        host=r.host,
        status=r.status,
        attempts=r.attempts,
        deliveries=r.deliveries,
        worker=r.worker,
        enqueued_at=r.enqueued_at,
        started_at=r.started_at,
        finished_at=r.finished_at,
        last_error=r.last_error,
    )
