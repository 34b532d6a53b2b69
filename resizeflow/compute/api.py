"""The compute service layer, after Nova's ``nova/compute/api.py``.

Each call checks policy, the lock and the instance state, moves the rows by
compare-and-swap, records an instance action, writes the workflow's plan into
the step journal, commits, and only then sends the workflow. A request that
loses a race fails here, before anything is sent.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Sequence
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from resizeflow import errors, flows, routing
from resizeflow.compute.checks import check_instance_lock, check_instance_state, check_service_up
from resizeflow.compute.deleting import end_for_delete, in_flight, live_migration_of
from resizeflow.compute.events import (
    api_event,
    record_action,
    scheduled,
    taken_over,
    unscheduled,
)
from resizeflow.compute.images import check_boot_image
from resizeflow.compute.launching import Launch, plan
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.compute.scheduler import select_destination
from resizeflow.compute.volumes import (
    VOLUME_FLOWS,
    BlockDevice,
    VolumeOps,
    check_no_volume_operation,
    reserve,
)
from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import journal
from resizeflow.db.instances import SystemMetadata, visible_instance
from resizeflow.db.models import Instance, Migration, utcnow
from resizeflow.db.session import Database
from resizeflow.openstack.base import NodeRef, PortRequest, Resources
from resizeflow.openstack.network import SqlNetwork
from resizeflow.openstack.placement import SqlPlacement
from resizeflow.openstack.quota import SqlQuota
from resizeflow.states import (
    JOURNAL_ENDED,
    REBOOT_OVERRIDABLE,
    JournalStatus,
    MigrationStatus,
    TaskState,
    VmState,
    check_migration,
    check_vm,
)

log = logging.getLogger(__name__)


class ComputeAPI(VolumeOps):
    """Nova's compute API: every action on a server, checked, recorded and planned."""

    def __init__(self, settings: Settings, database: Database, app: Celery) -> None:
        super().__init__(database, app)
        self.settings = settings

    # -- helpers ------------------------------------------------------------
    def _quota(self, session: Session) -> SqlQuota:
        return SqlQuota.with_defaults_of(session, self.settings)

    def _get(self, caller: RequestContext, session: Session, uuid: str, action: str) -> Instance:
        inst = visible_instance(session, caller, uuid)
        authorize(caller, f"compute:{action}", inst.project_id)
        return inst

    # -- reads --------------------------------------------------------------
    def get(self, caller: RequestContext, uuid: str) -> Instance:
        with self.db.snapshot() as s:
            return self._get(caller, s, uuid, "servers:show")

    # -- boot ---------------------------------------------------------------
    def create(
        self,
        caller: RequestContext,
        *,
        name: str,
        flavor_ref: str | int,
        host: str | None = None,
        networks: Sequence[PortRequest] = (PortRequest(),),
        metadata: dict[str, str] | None = None,
        image_ref: str | None = None,
        description: str | None = None,
        volumes: Sequence[BlockDevice] = (),
    ) -> str:
        """Boot a server on ``host`` (admin only) or on a scheduled host, with
        ``volumes`` reserved for it (its spawn attaches them)."""
        authorize(caller, "compute:servers:create")
        if host is not None:
            authorize(caller, "compute:servers:create:forced_host")
        with self._launching() as (s, launches):
            flavor = dbapi.get_flavor(s, flavor_ref)
            image_ref = check_boot_image(self.settings, image_ref, flavor.as_dict(), caller)
            uuid = str(uuidlib.uuid4())
            network = SqlNetwork(s, self.settings.fixed_range)
            # The NICs asked for are checked before quota and scheduling, as Nova does.
            network.check_requests(
                uuid, caller.project_id, None if caller.is_admin else caller.project_id, networks
            )
            res = Resources.of_flavor(flavor.as_dict())
            self._quota(s).check_deltas(
                caller.project_id, cores=res.vcpus, ram=res.memory_mb, instances=1
            )
            dest = select_destination(
                s, res, requested_host=host, service_down_time=self.settings.service_down_time
            )
            inst = Instance(
                uuid=uuid,
                display_name=name,
                description=description,
                project_id=caller.project_id,
                user_id=caller.user_id,
                host=dest.host,
                node=dest.node,
                flavor=flavor.as_dict(),
                system_metadata=dict(metadata or {}),
                vm_state=VmState.BUILDING,
                task_state=TaskState.SPAWNING,
            )
            SystemMetadata(inst).image_ref = image_ref
            s.add(inst)
            s.flush()
            SqlPlacement(s).claim(uuid, dest, res)
            network.allocate_for_instance(uuid, caller.project_id, networks)
            for bd in volumes:
                reserve(s, caller, inst, bd)
            action = record_action(caller, s, inst, "create")
            launches.append(plan(caller, s, flows.SPAWN, inst, action))
        return uuid

    # -- resize and cold migration --------------------------------------------
    def resize(
        self, caller: RequestContext, uuid: str, flavor_ref: str | int, *, host: str | None = None
    ) -> int:
        """Start a resize; returns the migration id."""
        if host is not None:
            authorize(caller, "compute:resize:forced_host")
        return self._move(caller, uuid, flavor_ref, host)

    def migrate(self, caller: RequestContext, uuid: str, *, host: str | None = None) -> int:
        """Cold-migrate a server to another host at its own flavor; returns the migration id.

        Nova's ``resize`` without a flavor: the same flows, on a migration of
        type ``migration``, confirmed or reverted as a resize is. A ``host``
        the caller names must be a compute host other than the server's own.
        """
        return self._move(caller, uuid, None, host)

    def _move(
        self, caller: RequestContext, uuid: str, flavor_ref: str | int | None, host: str | None
    ) -> int:
        migrate = flavor_ref is None
        with self._launching() as (s, launches):
            if migrate:
                inst = self._get(caller, s, uuid, "migrate:host" if host else "migrate")
            else:
                inst = self._get(caller, s, uuid, "resize")
            check_instance_lock(caller, inst)
            check_instance_state(inst, "resize", vm_state=(VmState.ACTIVE, VmState.STOPPED))
            check_no_volume_operation(s, inst)
            assert inst.host is not None
            assert inst.node is not None
            if migrate and host is not None:
                if host == inst.host:
                    raise errors.CannotMigrateToSameHost()
                dbapi.get_node(s, host)  # ComputeHostNotFound
            old = inst.flavor
            new = old if migrate else self._new_flavor(s, inst, flavor_ref)
            dbapi.cas_task_state(s, uuid, [None], TaskState.RESIZE_PREP)
            # NOTE: a resize a reset-state left awaiting confirmation (the server
            # is no longer RESIZED) can never be confirmed or reverted; the
            # periodic auto-confirm errors it out. It is errored out here if the
            # server moves first: with two finished migrations the periodic task
            # would confirm the stale one over the new resize.
            for stale in dbapi.migrations_of(s, uuid, MigrationStatus.FINISHED):
                stale.status = check_migration(stale.status, MigrationStatus.ERROR)
            action = record_action(caller, s, inst, "migrate" if migrate else "resize")
            mig = Migration(
                uuid=str(uuidlib.uuid4()),
                instance_uuid=uuid,
                migration_type="migration" if migrate else "resize",
                source_compute=inst.host,
                source_node=inst.node,
                old_instance_type_id=int(old["id"]),
                new_instance_type_id=int(new["id"]),
                status=MigrationStatus.PRE_MIGRATING,
                user_id=caller.user_id,
                project_id=caller.project_id,
            )
            s.add(mig)
            s.flush()
            # NOTE: a cold migration never stays on its host (libvirt cannot);
            # a resize may, if the settings allow it or an admin named the host.
            same_ok = not migrate and (self.settings.allow_resize_to_same_host or host == inst.host)
            try:
                dest = select_destination(
                    s,
                    Resources.of_flavor(new),
                    requested_host=host,
                    exclude=() if same_ok else (inst.host,),
                    service_down_time=self.settings.service_down_time,
                )
            except errors.NoValidHost as exc:
                unscheduled(s, inst, mig, action, exc, migrate)
                return mig.id
            mig.dest_compute, mig.dest_node = dest.host, dest.node
            inst.old_flavor, inst.new_flavor = old, dict(new)
            SystemMetadata(inst).old_vm_state = inst.vm_state
            scheduled(s, action, None)
            launches.append(plan(caller, s, flows.RESIZE, inst, action, mig))
            return mig.id

    def _new_flavor(
        self, session: Session, inst: Instance, flavor_ref: str | int | None
    ) -> dict[str, Any]:
        """The flavor a resize asks for, checked against the server's and its quota."""
        assert flavor_ref is not None
        new = dbapi.get_flavor(session, flavor_ref)
        old = inst.flavor
        if new.id == old["id"]:
            raise errors.CannotResizeToSameFlavor()
        if new.root_gb < int(old["root_gb"]):
            raise errors.CannotResizeDisk(reason="Unable to resize disk down.")
        new_res, old_res = Resources.of_flavor(new.as_dict()), Resources.of_flavor(old)
        self._quota(session).check_deltas(
            inst.project_id,
            cores=new_res.vcpus - old_res.vcpus,
            ram=new_res.memory_mb - old_res.memory_mb,
        )
        return new.as_dict()

    def confirm_resize(self, caller: RequestContext, uuid: str) -> int:
        """Confirm a finished resize; returns the migration id."""
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, "confirm_resize")
            check_instance_lock(caller, inst)
            check_instance_state(inst, "confirm_resize", vm_state=(VmState.RESIZED,))
            check_no_volume_operation(s, inst)
            mig = dbapi.find_migration(s, uuid, MigrationStatus.FINISHED)
            check_service_up(s, mig.source_compute, self.settings.service_down_time)
            dbapi.cas_migration_status(
                s, mig.id, MigrationStatus.FINISHED, MigrationStatus.CONFIRMING
            )
            action = record_action(caller, s, inst, "confirmResize")
            launches.append(plan(caller, s, flows.CONFIRM, inst, action, mig))
            return mig.id

    def revert_resize(self, caller: RequestContext, uuid: str) -> int:
        """Revert a finished resize; returns the migration id."""
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, "revert_resize")
            check_instance_lock(caller, inst)
            check_instance_state(inst, "revert_resize", vm_state=(VmState.RESIZED,))
            check_no_volume_operation(s, inst)
            mig = dbapi.find_migration(s, uuid, MigrationStatus.FINISHED)
            assert mig.dest_compute is not None  # a finished migration has its dest
            check_service_up(s, mig.dest_compute, self.settings.service_down_time)
            # Reverting a down-size takes the bigger flavor back: check quota
            # for the difference, as Nova's _reverse_upsize_quota_delta does.
            if inst.old_flavor is not None:
                old, new = Resources.of_flavor(inst.old_flavor), Resources.of_flavor(inst.flavor)
                self._quota(s).check_deltas(
                    inst.project_id,
                    cores=old.vcpus - new.vcpus,
                    ram=old.memory_mb - new.memory_mb,
                )
            dbapi.cas_task_state(s, uuid, [None], TaskState.RESIZE_REVERTING)
            dbapi.cas_migration_status(
                s, mig.id, MigrationStatus.FINISHED, MigrationStatus.REVERTING
            )
            action = record_action(caller, s, inst, "revertResize")
            launches.append(plan(caller, s, flows.REVERT, inst, action, mig))
            return mig.id

    # -- power --------------------------------------------------------------
    def _instance_op(
        self,
        caller: RequestContext,
        uuid: str,
        method: str,
        action: str,
        vm_state: Sequence[VmState],
        flow: flows.Flow,
    ) -> None:
        assert flow.task_state is not None
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, method)
            check_instance_lock(caller, inst)
            check_instance_state(inst, method, vm_state=vm_state)
            check_no_volume_operation(s, inst)
            dbapi.cas_task_state(s, uuid, [None], flow.task_state)
            record = record_action(caller, s, inst, action)
            launches.append(plan(caller, s, flow, inst, record))

    def reboot(self, caller: RequestContext, uuid: str, reboot_type: str) -> None:
        """Nova's reboot: SOFT of an active server, HARD also of a stopped or errored one.

        A hard reboot may take over a soft one at any point, or a hard one
        whose host has not taken it yet, as Nova allows: the operation it
        takes over is ended, and its step, if it still comes, does nothing.
        """
        hard = reboot_type.upper() == "HARD"
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, "reboot")
            check_instance_lock(caller, inst)
            allowed = (VmState.ACTIVE, VmState.STOPPED, VmState.ERROR)
            check_instance_state(inst, "reboot", vm_state=allowed, task_state=REBOOT_OVERRIDABLE)
            check_no_volume_operation(s, inst)
            if hard:
                flow = flows.HARD_REBOOT
                dbapi.cas_task_state(s, uuid, REBOOT_OVERRIDABLE, TaskState.REBOOTING_HARD)
                taken = journal.open_operations(s, uuid)
                for row in taken:
                    journal.end(row, JournalStatus.ABORTED, "a hard reboot took over")
                taken_over(s, inst, taken)
            else:
                flow = flows.SOFT_REBOOT
                check_instance_state(inst, "reboot", vm_state=(VmState.ACTIVE,))
                dbapi.cas_task_state(s, uuid, [None], TaskState.REBOOTING)
            record = record_action(caller, s, inst, "reboot")
            launches.append(plan(caller, s, flow, inst, record))

    def reset_state(self, caller: RequestContext, uuid: str, state: VmState) -> None:
        """Nova's os-resetState (admin): the server's vm_state is ``state``, no task.

        NOTE: an operator resets a server to declare its state after a failure
        (Nova's advice after a confirm or revert that failed). A workflow still
        open for it would overwrite that when it resumes, so it is ended here:
        its steps not done are aborted, its migration goes to error, and a
        failed one can no longer be retried over the state declared.
        """
        with self.db.transaction() as s:
            inst = self._get(caller, s, uuid, "reset_state")
            # The instance first, as every step locks it (see delete).
            s.refresh(inst, with_for_update={"key_share": True})
            reason = f"the server's state was reset by {caller.user_id}"
            for row in journal.open_operations(s, uuid):
                # NOTE: a volume attach or detach is left to finish: Nova shows no
                # task for it and its reset-state does not touch it, and ending
                # its row here would leave the volume reserved (or detaching) and
                # exported to the host for good.
                if row.flow not in VOLUME_FLOWS:
                    journal.end(row, JournalStatus.ABORTED, reason)
            mig = live_migration_of(s, uuid)
            if mig is not None:
                for row in journal.rows(s, mig.id):
                    if row.status not in JOURNAL_ENDED:
                        journal.end(row, JournalStatus.ABORTED, reason)
                    row.restore = None
                if mig.status not in (MigrationStatus.ERROR, MigrationStatus.FINISHED):
                    mig.status = check_migration(mig.status, MigrationStatus.ERROR)
                if mig.status == MigrationStatus.ERROR and inst.host and inst.node:
                    _claims_as_declared(SqlPlacement(s), inst, mig)
            inst.vm_state = check_vm(inst.vm_state, state)
            inst.task_state = None
            action = record_action(caller, s, inst, "resetState")
            action.finish_time = utcnow()

    def console_output(self, caller: RequestContext, uuid: str, length: int | None) -> str:
        """The guest's console log, read by the host that runs it (Nova's RPC call).

        A host that is down is refused at once rather than waited for.
        """
        with self.db.snapshot() as s:
            inst = self._get(caller, s, uuid, "console_output")
            if inst.host is None:
                raise errors.InstanceNotReady(instance_id=uuid)
            host = inst.host
            check_service_up(s, host, self.settings.service_down_time)
        try:
            found = routing.ask(
                self.app,
                host,
                flows.HOST_TASKS.console_output,
                uuid,
                length,
                timeout=self.settings.host_call_timeout,
            )
        except errors.HostDidNotAnswer:
            log.warning("host %s did not answer a console request for %s", host, uuid)
            raise
        return str(found)

    def stop(self, caller: RequestContext, uuid: str) -> None:
        self._instance_op(caller, uuid, "stop", "stop", (VmState.ACTIVE, VmState.ERROR), flows.STOP)

    def start(self, caller: RequestContext, uuid: str) -> None:
        self._instance_op(caller, uuid, "start", "start", (VmState.STOPPED,), flows.START)

    # -- lock ---------------------------------------------------------------
    def lock(self, caller: RequestContext, uuid: str, reason: str | None = None) -> None:
        with self.db.transaction() as s:
            inst = self._get(caller, s, uuid, "lock")
            if inst.locked:
                return
            owner = inst.project_id == caller.project_id
            inst.locked, inst.locked_by = True, "owner" if owner else "admin"
            if reason is not None:
                SystemMetadata(inst).locked_reason = reason
            api_event(s, record_action(caller, s, inst, "lock"), "api_lock")

    def unlock(self, caller: RequestContext, uuid: str) -> None:
        with self.db.transaction() as s:
            inst = self._get(caller, s, uuid, "unlock")
            # A lock an admin placed can only be lifted by an admin (Nova's
            # unlock_override rule).
            if inst.locked_by == "admin" and not caller.is_admin:
                raise errors.PolicyNotAuthorized(action="compute:unlock_override")
            inst.locked, inst.locked_by = False, None
            SystemMetadata(inst).locked_reason = None
            api_event(s, record_action(caller, s, inst, "unlock"), "api_unlock")

    # -- delete -------------------------------------------------------------
    def delete(self, caller: RequestContext, uuid: str) -> None:
        """Delete a server in any task_state, as Nova accepts it.

        - Awaiting resize confirmation (VERIFY_RESIZE, nothing in flight): the
          resize is confirmed first, then the server is deleted (Nova's
          ``_confirm_resize_on_deleting``).
        - A resize, confirm or revert in flight (or stuck): its migration is
          moved to ``error`` and the journal rows not yet done are marked
          aborted, in the same transaction that sets ``deleting``. A step that
          then starts finds its row aborted or its migration in error and does
          nothing. The server is deleted on its host, and then both hosts of the
          migration are purged of its domain and directories and the
          migration's claim is freed (the cleanup path of a deleted server's
          errored migration), which ends the migration ``failed``.
        - A workflow that had errored out: its open rows are aborted, and its
          leftovers go to the periodic cleanup of incomplete migrations.
        - Otherwise (a stop, start or spawn in flight included): the server is
          deleted on its host; the instance task in flight finds the task_state
          changed and does nothing.
        """
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, "delete")
            check_instance_lock(caller, inst)
            # NOTE: the instance row is locked first, as every step locks it:
            # a step running now holds it, so this waits for that step to commit,
            # and no step commits after this transaction without seeing it.
            # FOR NO KEY UPDATE, as the UPDATE below would take: a confirm that
            # holds its migration row and records its action (a key-share lock
            # on this row) must not deadlock with it.
            s.refresh(inst, with_for_update={"key_share": True})
            dbapi.cas_task_state(s, uuid, [inst.task_state], TaskState.DELETING)
            live = live_migration_of(s, uuid)
            confirm_first = (
                live is not None
                and live.status == MigrationStatus.FINISHED
                and inst.vm_state == VmState.RESIZED
                and not in_flight(s, live)
            )
            # Nova records the confirm it makes first as an action of its own,
            # under the delete's request id, before the delete's.
            confirming = record_action(caller, s, inst, "confirmResize") if confirm_first else None
            action = record_action(caller, s, inst, "delete")
            # An operation in flight (a stop, start or spawn) ends here: its
            # step, if it still comes, finds its row aborted.
            for row in journal.open_operations(s, uuid):
                journal.end(row, JournalStatus.ABORTED, "the server was deleted")
            delete = plan(caller, s, flows.DELETE, inst, action)
            if live is None:
                launches.append(delete)
                return
            if confirming is not None:
                # NOTE: confirming first frees the source host's copy and claim;
                # deleting straight away would leak them (Nova's
                # _confirm_resize_on_deleting).
                dbapi.cas_migration_status(
                    s, live.id, MigrationStatus.FINISHED, MigrationStatus.CONFIRMING
                )
                confirm = plan(caller, s, flows.CONFIRM, inst, confirming, live)
                launches.append(Launch(confirm.subject, confirm.steps, then=delete))
                return
            errored = live.status == MigrationStatus.ERROR
            end_for_delete(s, live)
            if errored or live.status == MigrationStatus.CONFIRMED:
                # NOTE: a workflow that errored out before the delete keeps its
                # leftovers for the periodic cleanup of incomplete migrations, as
                # in Nova (an operator may want to look first); one whose last
                # step (finish_confirm) was all that was left has none.
                launches.append(delete)
                return
            # A migration in flight was scheduled: it has a dest.
            assert live.dest_compute is not None
            launches.append(
                Launch(
                    delete.subject,
                    delete.steps,
                    cleanup=(live.id, (live.source_compute, live.dest_compute)),
                )
            )


def _claims_as_declared(placement: SqlPlacement, inst: Instance, mig: Migration) -> None:
    """The server holds its flavor on its host, and nothing anywhere else; its
    ended migration holds nothing.

    NOTE: an operator who resets a server after a failed resize declares it
    whole where it is. The claims the workflow left (the new flavor's on the
    dest, held by the server; the old one's on the source, held by the
    migration) would otherwise outlive it: the scheduler would count them for
    ever, and a later resize would claim on top of them.
    """
    assert inst.host is not None
    assert inst.node is not None
    placement.release_everywhere(mig.uuid)
    placement.release_everywhere(inst.uuid)
    placement.claim(inst.uuid, NodeRef(inst.host, inst.node), Resources.of_flavor(inst.flavor))
