"""What the service layer records besides the workflow: the instance action, and the
events and faults of the work Nova's API and conductor do before a compute host
is involved (scheduling, a lock, a hard reboot taking over another)."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from resizeflow import errors, flows
from resizeflow.compute.policy import RequestContext
from resizeflow.db import api as dbapi
from resizeflow.db.models import Instance, InstanceAction, Migration
from resizeflow.states import MigrationStatus, TaskState, check_migration

log = logging.getLogger(__name__)


def record_action(
    caller: RequestContext, session: Session, inst: Instance, action: str
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


def api_event(
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


def scheduled(session: Session, action: InstanceAction, failure: BaseException | None) -> None:
    """Record the events of Nova's conductor, which schedules a resize or a
    cold migration: ``conductor_migrate_server`` and, within it, ``cold_migrate``."""
    for event in ("conductor_migrate_server", "cold_migrate"):
        api_event(session, action, event, failure)
    if failure is not None:
        dbapi.finish_action(session, action.id, error=True)


def unscheduled(
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
        scheduled(session, action, raised)
    mig.status = check_migration(mig.status, MigrationStatus.ERROR)
    dbapi.cas_task_state(session, inst.uuid, [TaskState.RESIZE_PREP], None)
    dbapi.add_fault(session, inst.uuid, exc, None, "".join(traceback.format_exception(exc)))
    log.info("%s of %s: %s", what, inst.uuid, exc.message, extra={"instance_uuid": inst.uuid})


def taken_over(session: Session, inst: Instance, rows: Sequence[Any]) -> None:
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
