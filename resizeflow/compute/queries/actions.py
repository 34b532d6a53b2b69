"""A server's instance actions and their events, deleted servers' included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from resizeflow import errors, flows
from resizeflow.compute.policy import RequestContext, allowed, authorize
from resizeflow.compute.queries.base import Reader
from resizeflow.compute.queries.infos import ActionFilters, ActionInfo, EventInfo, MarkerNotFound
from resizeflow.db.instances import visible_instance
from resizeflow.db.models import InstanceAction, InstanceActionEvent, StepJournal
from resizeflow.states import JournalStatus


class ActionQueries(Reader):
    def actions(
        self,
        caller: RequestContext,
        uuid: str,
        filters: ActionFilters = ActionFilters(),
        *,
        deleted_visible: bool = True,
    ) -> list[ActionInfo]:
        """A server's actions newest first (2.58: paged from a request id, by change time)."""
        with self.db.snapshot() as s:
            # Nova keeps a deleted server's actions readable (read_deleted='yes').
            inst = visible_instance(s, caller, uuid, deleted=True)
            if inst.deleted and not deleted_visible:
                raise errors.InstanceNotFound(instance_id=uuid)
            authorize(caller, "compute:instance_actions:list", inst.project_id)
            rows = list(
                s.scalars(
                    select(InstanceAction)
                    .where(InstanceAction.instance_uuid == uuid)
                    .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc())
                )
            )
            found = [_action(a, None, _updated_at(s, a)) for a in rows]
        if filters.marker is not None:
            ids = [a.request_id for a in found]
            if filters.marker not in ids:
                raise MarkerNotFound(marker=filters.marker)
            found = found[ids.index(filters.marker) + 1 :]
        if filters.changes_since is not None:
            since = filters.changes_since
            found = [a for a in found if (a.updated_at or a.start_time) >= since]
        if filters.changes_before is not None:
            before = filters.changes_before
            found = [a for a in found if (a.updated_at or a.start_time) <= before]
        return found[: filters.limit] if filters.limit is not None else found

    def action(
        self,
        caller: RequestContext,
        uuid: str,
        request_id: str,
        *,
        deleted_visible: bool = True,
        events_for_all: bool = False,
    ) -> ActionInfo:
        """One action; its events if policy allows (or, from 2.51, always)."""
        with self.db.snapshot() as s:
            # Nova keeps a deleted server's actions readable (read_deleted='yes').
            inst = visible_instance(s, caller, uuid, deleted=True)
            if inst.deleted and not deleted_visible:
                raise errors.InstanceNotFound(instance_id=uuid)
            authorize(caller, "compute:instance_actions:show", inst.project_id)
            row = s.scalars(
                select(InstanceAction)
                .where(
                    InstanceAction.instance_uuid == uuid, InstanceAction.request_id == request_id
                )
                .order_by(InstanceAction.id.desc())
                .limit(1)
            ).first()
            if row is None:
                raise errors.InstanceActionNotFound(request_id=request_id, instance_uuid=uuid)
            events: tuple[EventInfo, ...] | None = None
            if events_for_all or allowed(
                caller, "compute:instance_actions:events", inst.project_id
            ):
                events = _events(s, row.id)
            return _action(row, events, _updated_at(s, row))


def _updated_at(session: Session, a: InstanceAction) -> dt.datetime:
    """When the action last changed: its newest event start or end, or its own times."""
    newest = session.execute(
        select(
            func.max(InstanceActionEvent.start_time), func.max(InstanceActionEvent.finish_time)
        ).where(InstanceActionEvent.action_id == a.id)
    ).one()
    times = [t for t in (a.start_time, a.finish_time, *newest) if t is not None]
    return max(times)


def _action(
    a: InstanceAction, events: Sequence[EventInfo] | None, updated_at: dt.datetime | None = None
) -> ActionInfo:
    return ActionInfo(
        action=a.action,
        instance_uuid=a.instance_uuid,
        request_id=a.request_id,
        user_id=a.user_id,
        project_id=a.project_id,
        start_time=a.start_time,
        finish_time=a.finish_time,
        message=a.message,
        events=None if events is None else tuple(events),
        updated_at=updated_at,
    )


def _events(session: Session, action_id: int) -> tuple[EventInfo, ...]:
    """An action's events, newest first as Nova lists them, with the steps running
    now shown as events in progress.

    A step writes its event when it ends (in the commit that finishes it);
    until then its journal row says it is running, and its event is the newest.
    """
    rows = session.scalars(
        select(InstanceActionEvent).where(InstanceActionEvent.action_id == action_id)
    )
    # Nova orders by the event's creation, then its id, both descending.
    found = [
        (
            e.start_time,
            e.id,
            EventInfo(e.event, e.host, e.start_time, e.finish_time, e.result, e.traceback),
        )
        for e in rows
    ]
    written = {info.event for _, _, info in found}
    for r in session.scalars(
        select(StepJournal).where(
            StepJournal.action_id == action_id, StepJournal.status == JournalStatus.RUNNING
        )
    ):
        name = flows.step(r.step).event
        if name not in written and r.started_at is not None:
            found.append(
                (r.started_at, 2**63, EventInfo(name, r.host, r.started_at, None, None, None))
            )
    return tuple(info for *_, info in sorted(found, key=lambda f: (f[0], f[1]), reverse=True))
