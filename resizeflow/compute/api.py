"""The compute service layer, after Nova's ``nova/compute/api.py``.

Each call checks policy, the lock and the instance state, moves the rows by
compare-and-swap, records an instance action, writes the workflow's plan into
the step journal, commits, and only then sends the workflow. A request that
loses a race fails here, before anything is sent.
"""

from __future__ import annotations

import logging
import socket
import traceback
import uuid as uuidlib
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import kombu.exceptions
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow import errors, flows, routing
from resizeflow.compute.images import check_boot_image
from resizeflow.compute.policy import RequestContext, authorize
from resizeflow.compute.scheduler import select_destination
from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import journal, services
from resizeflow.db.instances import SystemMetadata, visible_instance
from resizeflow.db.models import Instance, InstanceAction, Migration, utcnow
from resizeflow.db.session import Database
from resizeflow.openstack.base import Resources
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

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)

BROKER_ERRORS: tuple[type[Exception], ...] = (
    kombu.exceptions.OperationalError,
    ConnectionError,
    TimeoutError,
    OSError,
)


@dataclass(frozen=True)
class Launch:
    """A planned workflow to send once the transaction that planned it has committed."""

    subject: int | str  # its tasks' argument: a migration id or an instance uuid
    steps: tuple[journal.PlannedStep, ...]
    then: Launch | None = None  # a workflow to run after this one succeeds
    # After it: purge the server's leftovers on these hosts, then free the
    # migration's claim (a delete that ended a workflow in flight).
    cleanup: tuple[int, tuple[str, str]] | None = None


def check_instance_state(
    inst: Instance,
    method: str,
    vm_state: Collection[VmState] | None = None,
    task_state: Collection[TaskState | None] | None = (None,),
) -> None:
    """Nova's ``check_instance_state`` decorator, as a call."""
    if vm_state is not None and inst.vm_state not in vm_state:
        raise errors.InstanceInvalidState(
            attr="vm_state", instance_uuid=inst.uuid, state=inst.vm_state.value, method=method
        )
    if task_state is not None and inst.task_state not in task_state:
        raise errors.InstanceInvalidState(
            attr="task_state",
            instance_uuid=inst.uuid,
            state=inst.task_state.value if inst.task_state else None,
            method=method,
        )


def check_instance_lock(caller: RequestContext, inst: Instance) -> None:
    if inst.locked and not caller.is_admin:
        raise errors.InstanceIsLocked(instance_uuid=inst.uuid)


class ComputeAPI:
    def __init__(self, settings: Settings, database: Database, app: Celery) -> None:
        self.settings = settings
        self.db = database
        self.app = app
        # What the broker's transport raises when it is unreachable or refuses us
        # (for AMQP, a vhost being recreated, say), besides kombu's own errors.
        conn = app.connection_for_write()
        self._broker_errors: tuple[type[BaseException], ...] = (
            *BROKER_ERRORS,
            *conn.connection_errors,
            *conn.channel_errors,
        )

    # -- helpers ------------------------------------------------------------
    def _quota(self, session: Session) -> SqlQuota:
        return SqlQuota.with_defaults_of(session, self.settings)

    def _get(self, caller: RequestContext, session: Session, uuid: str, action: str) -> Instance:
        inst = visible_instance(session, caller, uuid)
        authorize(caller, f"compute:{action}", inst.project_id)
        return inst

    def _record(
        self, caller: RequestContext, session: Session, inst: Instance, action: str
    ) -> InstanceAction:
        log.info(
            "%s requested by %s/%s",
            action,
            caller.user_id,
            caller.project_id,
            extra={"request_id": caller.request_id, "instance_uuid": inst.uuid},
        )
        return dbapi.record_action(
            session,
            action=action,
            instance_uuid=inst.uuid,
            request_id=caller.request_id,
            user_id=caller.user_id,
            project_id=caller.project_id,
        )

    def _plan(
        self,
        caller: RequestContext,
        session: Session,
        flow: flows.Flow,
        inst: Instance,
        action: InstanceAction,
        mig: Migration | None = None,
    ) -> Launch:
        """Journal ``flow``'s steps as pending, in the transaction that accepts the request."""
        if mig is not None:
            steps = routing.plan(flow, source=mig.source_compute, dest=mig.dest_compute)
        else:
            steps = routing.plan(flow, host=inst.host)
        session.flush()  # the action's id, for the journal rows
        journal.plan(
            session,
            flow.name,
            steps,
            migration_id=mig.id if mig is not None else None,
            instance_uuid=inst.uuid,
            request_id=caller.request_id,
            action_id=action.id,
        )
        return Launch(mig.id if mig is not None else inst.uuid, tuple(steps))

    @contextmanager
    def _launching(self) -> Iterator[tuple[Session, list[Launch]]]:
        """A transaction whose launches are sent only after it commits."""
        launches: list[Launch] = []
        with self.db.transaction() as session:
            yield session, launches
        for item in launches:
            try:
                self._send(item)
            except self._broker_errors as exc:
                # NOTE: the request is already durable: its plan is in the step
                # journal, and the reconciler sends it once the broker is back.
                # Failing the request now would tell the caller it did not
                # happen when it did.
                log.warning(
                    "broker unavailable, %s will be sent by the reconciler: %s",
                    item.subject,
                    exc,
                )

    def _send(self, item: Launch) -> None:
        then = None
        if item.then is not None:
            then = routing.build(self.app, item.then.subject, item.then.steps)
        elif item.cleanup is not None:
            mig_id, hosts = item.cleanup
            then = routing.cleanup(self.app, mig_id, str(item.subject), hosts)
        routing.launch(self.app, item.subject, item.steps, then=then)

    def _check_service_up(self, session: Session, host: str) -> None:
        """Refuse work for a host whose worker is down, as Nova does (409).

        Sending it anyway would leave the workflow waiting in a queue nobody
        reads, with the migration already moved on.
        """
        svc = services.get(session, host)
        if svc is not None and not services.is_up(svc, self.settings.service_down_time):
            raise errors.ServiceUnavailable()

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
        networks: Sequence[str] = ("private",),
        metadata: dict[str, str] | None = None,
        image_ref: str | None = None,
        description: str | None = None,
    ) -> str:
        """Boot a server on ``host`` (admin only) or on a scheduled host."""
        authorize(caller, "compute:servers:create")
        if host is not None:
            authorize(caller, "compute:servers:create:forced_host")
        with self._launching() as (s, launches):
            flavor = dbapi.get_flavor(s, flavor_ref)
            image_ref = check_boot_image(self.settings, image_ref, flavor.as_dict())
            res = Resources.of_flavor(flavor.as_dict())
            self._quota(s).check_deltas(
                caller.project_id, cores=res.vcpus, ram=res.memory_mb, instances=1
            )
            dest = select_destination(
                s, res, requested_host=host, service_down_time=self.settings.service_down_time
            )
            uuid = str(uuidlib.uuid4())
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
            SqlNetwork(s, self.settings.fixed_range).allocate_for_instance(uuid, networks)
            action = self._record(caller, s, inst, "create")
            launches.append(self._plan(caller, s, flows.SPAWN, inst, action))
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
            assert inst.host is not None
            assert inst.node is not None
            if migrate and host is not None:
                if host == inst.host:
                    raise errors.CannotMigrateToSameHost()
                dbapi.get_node(s, host)  # ComputeHostNotFound
            old = inst.flavor
            new = old if migrate else self._new_flavor(s, inst, flavor_ref)
            dbapi.cas_task_state(s, uuid, [None], TaskState.RESIZE_PREP)
            action = self._record(caller, s, inst, "migrate" if migrate else "resize")
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
                self._unscheduled(s, inst, mig, action, exc, migrate)
                return mig.id
            mig.dest_compute, mig.dest_node = dest.host, dest.node
            inst.old_flavor, inst.new_flavor = old, dict(new)
            SystemMetadata(inst).old_vm_state = inst.vm_state
            self._scheduled(s, action, None)
            launches.append(self._plan(caller, s, flows.RESIZE, inst, action, mig))
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

    @staticmethod
    def _api_event(
        session: Session, action: InstanceAction, event: str, failure: BaseException | None = None
    ) -> None:
        """Record an event of work done in this process (Nova's API or conductor),
        which begins and ends here; this machine is its host, as Nova's is."""
        session.flush()  # the action's id and start
        tb = "".join(traceback.format_exception(failure)) if failure is not None else None
        dbapi.record_event(
            session,
            dbapi.event_params(
                action.id,
                event,
                host=socket.gethostname(),
                start=action.start_time,
                result="Success" if failure is None else "Error",
                traceback=tb,
            ),
        )

    @classmethod
    def _scheduled(
        cls, session: Session, action: InstanceAction, failure: BaseException | None
    ) -> None:
        """Record the events of Nova's conductor, which schedules a resize or a
        cold migration: ``conductor_migrate_server`` and, within it, ``cold_migrate``."""
        for event in ("conductor_migrate_server", "cold_migrate"):
            cls._api_event(session, action, event, failure)
        if failure is not None:
            dbapi.finish_action(session, action.id, error=True)

    def _unscheduled(
        self,
        session: Session,
        inst: Instance,
        mig: Migration,
        action: InstanceAction,
        exc: errors.NoValidHost,
        migrate: bool,
    ) -> None:
        """No host can take the server: the request stays accepted, as in Nova.

        NOTE: Nova's conductor schedules after the API has answered 202, so a
        move that finds no host is not refused: its migration ends in error,
        the server keeps its state with a fault, and the action's events say
        why. resizeflow schedules before answering, and records the same.
        """
        what = "cold migrate" if migrate else "resize"
        try:
            raise errors.NoValidHost(reason=f"No valid host found for {what}") from exc
        except errors.NoValidHost as raised:
            self._scheduled(session, action, raised)
        mig.status = check_migration(mig.status, MigrationStatus.ERROR)
        dbapi.cas_task_state(session, inst.uuid, [TaskState.RESIZE_PREP], None)
        dbapi.add_fault(session, inst.uuid, exc, None, "".join(traceback.format_exception(exc)))
        log.info("%s of %s: %s", what, inst.uuid, exc.message, extra={"instance_uuid": inst.uuid})

    def confirm_resize(self, caller: RequestContext, uuid: str) -> int:
        """Confirm a finished resize; returns the migration id."""
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, "confirm_resize")
            check_instance_lock(caller, inst)
            check_instance_state(inst, "confirm_resize", vm_state=(VmState.RESIZED,))
            mig = dbapi.find_migration(s, uuid, MigrationStatus.FINISHED)
            self._check_service_up(s, mig.source_compute)
            dbapi.cas_migration_status(
                s, mig.id, MigrationStatus.FINISHED, MigrationStatus.CONFIRMING
            )
            action = self._record(caller, s, inst, "confirmResize")
            launches.append(self._plan(caller, s, flows.CONFIRM, inst, action, mig))
            return mig.id

    def revert_resize(self, caller: RequestContext, uuid: str) -> int:
        """Revert a finished resize; returns the migration id."""
        with self._launching() as (s, launches):
            inst = self._get(caller, s, uuid, "revert_resize")
            check_instance_lock(caller, inst)
            check_instance_state(inst, "revert_resize", vm_state=(VmState.RESIZED,))
            mig = dbapi.find_migration(s, uuid, MigrationStatus.FINISHED)
            assert mig.dest_compute is not None  # a finished migration has its dest
            self._check_service_up(s, mig.dest_compute)
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
            action = self._record(caller, s, inst, "revertResize")
            launches.append(self._plan(caller, s, flows.REVERT, inst, action, mig))
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
            dbapi.cas_task_state(s, uuid, [None], flow.task_state)
            record = self._record(caller, s, inst, action)
            launches.append(self._plan(caller, s, flow, inst, record))

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
            if hard:
                flow = flows.HARD_REBOOT
                dbapi.cas_task_state(s, uuid, REBOOT_OVERRIDABLE, TaskState.REBOOTING_HARD)
                taken = journal.open_operations(s, uuid)
                for row in taken:
                    journal.end(row, JournalStatus.ABORTED, "a hard reboot took over")
                self._taken_over(s, inst, taken)
            else:
                flow = flows.SOFT_REBOOT
                check_instance_state(inst, "reboot", vm_state=(VmState.ACTIVE,))
                dbapi.cas_task_state(s, uuid, [None], TaskState.REBOOTING)
            record = self._record(caller, s, inst, "reboot")
            launches.append(self._plan(caller, s, flow, inst, record))

    @staticmethod
    def _taken_over(session: Session, inst: Instance, rows: Sequence[Any]) -> None:
        """Fail the reboots a hard reboot takes over, as Nova's compute fails them.

        NOTE: Nova's compute, running the earlier reboot after the hard one was
        asked for, finds the task state changed under it: the method fails with
        UnexpectedTaskStateError, which its event (Error), its action (message
        Error) and an instance fault record. resizeflow ends that reboot where
        it is taken over, and records the same there; its step, if it still
        comes, does nothing and records nothing.
        """
        failed: set[int] = set()
        for row in rows:
            if row.action_id is None or row.action_id in failed:
                continue
            failed.add(row.action_id)
            flow, step = flows.STEPS[row.step]
            assert flow.task_state is not None
            expected = [t.value for t in (flow.task_state, *flow.later_task_states)]
            try:
                raise errors.InstanceUpdateConflict(
                    instance_uuid=inst.uuid,
                    expected={"task_state": expected},
                    actual={"task_state": TaskState.REBOOTING_HARD.value},
                )
            except errors.InstanceUpdateConflict as exc:
                tb = "".join(traceback.format_exception(exc))
                dbapi.record_event(
                    session,
                    dbapi.event_params(
                        row.action_id,
                        step.event,
                        host=inst.host or socket.gethostname(),
                        start=None,
                        result="Error",
                        traceback=tb,
                    ),
                )
                dbapi.finish_action(session, row.action_id, error=True)
                dbapi.add_fault(session, inst.uuid, exc, inst.host, tb)

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
                journal.end(row, JournalStatus.ABORTED, reason)
            mig = self._live_migration_of(s, uuid)
            if mig is not None:
                for row in journal.rows(s, mig.id):
                    if row.status not in JOURNAL_ENDED:
                        journal.end(row, JournalStatus.ABORTED, reason)
                    row.restore = None
                if mig.status not in (MigrationStatus.ERROR, MigrationStatus.FINISHED):
                    mig.status = check_migration(mig.status, MigrationStatus.ERROR)
            inst.vm_state = check_vm(inst.vm_state, state)
            inst.task_state = None
            action = self._record(caller, s, inst, "resetState")
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
            svc = services.get(s, host)
            if svc is not None and not services.is_up(svc, self.settings.service_down_time):
                raise errors.ServiceUnavailable()
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
            self._api_event(s, self._record(caller, s, inst, "lock"), "api_lock")

    def unlock(self, caller: RequestContext, uuid: str) -> None:
        with self.db.transaction() as s:
            inst = self._get(caller, s, uuid, "unlock")
            # A lock an admin placed can only be lifted by an admin (Nova's
            # unlock_override rule).
            if inst.locked_by == "admin" and not caller.is_admin:
                raise errors.PolicyNotAuthorized(action="compute:unlock_override")
            inst.locked, inst.locked_by = False, None
            SystemMetadata(inst).locked_reason = None
            self._api_event(s, self._record(caller, s, inst, "unlock"), "api_unlock")

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
            live = self._live_migration_of(s, uuid)
            confirm_first = (
                live is not None
                and live.status == MigrationStatus.FINISHED
                and inst.vm_state == VmState.RESIZED
                and not _in_flight(s, live)
            )
            # Nova records the confirm it makes first as an action of its own,
            # under the delete's request id, before the delete's.
            confirming = self._record(caller, s, inst, "confirmResize") if confirm_first else None
            action = self._record(caller, s, inst, "delete")
            # An operation in flight (a stop, start or spawn) ends here: its
            # step, if it still comes, finds its row aborted.
            for row in journal.open_operations(s, uuid):
                journal.end(row, JournalStatus.ABORTED, "the server was deleted")
            delete = self._plan(caller, s, flows.DELETE, inst, action)
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
                confirm = self._plan(caller, s, flows.CONFIRM, inst, confirming, live)
                launches.append(Launch(confirm.subject, confirm.steps, then=delete))
                return
            errored = live.status == MigrationStatus.ERROR
            self._end_for_delete(s, live)
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

    @staticmethod
    def _live_migration_of(session: Session, uuid: str) -> Migration | None:
        """The server's newest migration if its workflow is not over (or errored).

        NOTE: a migration is ``confirmed`` or ``reverted`` one step before its
        flow ends (finish_confirm, finish_revert): with such a step still open
        the workflow is live.
        """
        mig = session.scalars(
            select(Migration)
            .where(Migration.instance_uuid == uuid)
            .order_by(Migration.id.desc())
            .limit(1)
            .with_for_update()
        ).first()
        if mig is None or mig.status == MigrationStatus.FAILED:
            return None
        if mig.status in (MigrationStatus.CONFIRMED, MigrationStatus.REVERTED) and not _open_rows(
            session, mig
        ):
            return None
        return mig

    @staticmethod
    def _end_for_delete(session: Session, mig: Migration) -> None:
        """End the migration's workflow for a delete: abort what is left, move it to error."""
        for row in journal.rows(session, mig.id):
            if row.status not in JOURNAL_ENDED:
                journal.end(row, JournalStatus.ABORTED, "the server was deleted")
        if mig.status not in (MigrationStatus.ERROR, MigrationStatus.CONFIRMED):
            mig.status = check_migration(mig.status, MigrationStatus.ERROR)
            mig.updated_at = utcnow()


def _open_rows(session: Session, mig: Migration) -> bool:
    return any(r.status not in JOURNAL_ENDED for r in journal.rows(session, mig.id))


def _in_flight(session: Session, mig: Migration) -> bool:
    """Whether a confirm or revert of this migration has been planned and not ended."""
    return any(
        r.status not in JOURNAL_ENDED and r.flow in ("confirm", "revert")
        for r in journal.rows(session, mig.id)
    )
