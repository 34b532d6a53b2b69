"""Row lookups, compare-and-swap updates, actions and faults.

Compare-and-swap is a single ``UPDATE ... WHERE <column> IN (expected)``: the
row count says whether this caller won. Two API calls racing on one server
therefore never both proceed, on SQLite or on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable
from typing import Any

from sqlalchemy import JSON, ColumnElement, ScalarSelect, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from resizeflow import errors
from resizeflow.db.models import (
    ComputeNode,
    Flavor,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    Migration,
    utcnow,
)
from resizeflow.states import MigrationStatus, TaskState, check_migration, check_task


def get_instance(session: Session, uuid: str, *, lock: bool = False) -> Instance:
    stmt = select(Instance).where(Instance.uuid == uuid, Instance.deleted.is_(False))
    if lock:
        stmt = stmt.with_for_update()
    inst = session.scalars(stmt).one_or_none()
    if inst is None:
        raise errors.InstanceNotFound(instance_id=uuid)
    return inst


def get_migration(session: Session, migration_id: int, *, lock: bool = False) -> Migration:
    stmt = select(Migration).where(Migration.id == migration_id)
    if lock:
        stmt = stmt.with_for_update()
    mig = session.scalars(stmt).one_or_none()
    if mig is None:
        raise errors.MigrationNotFound(migration_id=migration_id)
    return mig


def find_migration(session: Session, instance_uuid: str, status: MigrationStatus) -> Migration:
    """Nova's ``Migration.get_by_instance_and_status``: the newest such migration."""
    mig = session.scalars(
        select(Migration)
        .where(Migration.instance_uuid == instance_uuid, Migration.status == status)
        .order_by(Migration.id.desc())
        .limit(1)
    ).first()
    if mig is None:
        raise errors.InstanceNotResized()
    return mig


def migrations_of(session: Session, instance_uuid: str, status: MigrationStatus) -> list[Migration]:
    """A server's migrations in ``status``, locked, oldest first."""
    return list(
        session.scalars(
            select(Migration)
            .where(Migration.instance_uuid == instance_uuid, Migration.status == status)
            .order_by(Migration.id)
            .with_for_update()
        )
    )


def get_flavor(session: Session, flavor_ref: str | int) -> Flavor:
    ref = str(flavor_ref)
    flavor = session.scalars(select(Flavor).where(Flavor.flavorid == ref)).one_or_none()
    # NOTE: only a number that fits the id column; a longer one would make the
    # database raise instead of finding nothing.
    if flavor is None and ref.isascii() and ref.isdigit() and int(ref) < 2**31:
        flavor = session.get(Flavor, int(ref))
    if flavor is None or flavor.disabled:
        raise errors.FlavorNotFound(flavor_id=ref)
    return flavor


def get_node(
    session: Session, host: str, node: str | None = None, *, lock: bool = False
) -> ComputeNode:
    stmt = select(ComputeNode).where(ComputeNode.host == host)
    if node is not None:
        stmt = stmt.where(ComputeNode.node == node)
    if lock:
        stmt = stmt.with_for_update()
    found = session.scalars(stmt.order_by(ComputeNode.id).limit(1)).first()
    if found is None:
        raise errors.ComputeHostNotFound(host=host)
    return found


def cas_task_state(
    session: Session,
    instance_uuid: str,
    expected: Iterable[TaskState | None],
    new: TaskState | None,
) -> None:
    """Set task_state to ``new`` only if it is still one of ``expected``."""
    expected = list(expected)
    for old in expected:
        check_task(old, new)
    values = [e for e in expected if e is not None]
    cond: ColumnElement[bool] = Instance.task_state.in_(values)
    if None in expected:
        cond = or_(cond, Instance.task_state.is_(None))
    result = session.execute(
        update(Instance)
        .where(Instance.uuid == instance_uuid, cond)
        .values(task_state=new, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        actual = session.scalar(select(Instance.task_state).where(Instance.uuid == instance_uuid))
        raise errors.UnexpectedTaskState(
            expected=[e.value if e else None for e in expected],
            actual=actual.value if actual else None,
        )


def cas_migration_status(
    session: Session, migration_id: int, expected: MigrationStatus, new: MigrationStatus
) -> None:
    """Move a migration from ``expected`` to ``new``, or fail if another caller moved it first."""
    check_migration(expected, new)
    result = session.execute(
        update(Migration)
        .where(Migration.id == migration_id, Migration.status == expected)
        .values(status=new, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise errors.InstanceNotResized()


def record_action(
    session: Session,
    *,
    action: str,
    instance_uuid: str,
    request_id: str,
    user_id: str,
    project_id: str,
) -> InstanceAction:
    row = InstanceAction(
        action=action,
        instance_uuid=instance_uuid,
        request_id=request_id,
        user_id=user_id,
        project_id=project_id,
    )
    session.add(row)
    return row


_EVENT_COLUMNS = ("action_id", "event", "host", "start_time", "finish_time", "result", "traceback")


@functools.cache
def json_rows(
    dialect: str, where: ColumnElement[bool], *columns: ColumnElement[Any]
) -> ScalarSelect[Any]:
    """The rows of ``columns`` that match ``where``, as one JSON array of arrays.

    A column of another statement: it reads a few rows of another table in
    that statement's round trip. It is None or [] when no row matches.
    """
    if dialect == "postgresql":
        rows = func.json_agg(func.json_build_array(*columns), type_=JSON)
    else:
        rows = func.json_group_array(func.json_array(*columns), type_=JSON)
    return select(rows).where(where).scalar_subquery()


def event_upsert(dialect: str) -> Any:
    """Insert an action event, or update it on a retry; built once per dialect.

    Its parameters are ``b_<column>``; :func:`event_params` fills them.
    """
    upsert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = InstanceActionEvent.metadata.tables[InstanceActionEvent.__tablename__]
    stmt = upsert(table).values({c: bindparam(f"b_{c}") for c in _EVENT_COLUMNS})
    return stmt.on_conflict_do_update(
        index_elements=[table.c.action_id, table.c.event],
        set_={c: stmt.excluded[c] for c in ("host", "finish_time", "result", "traceback")},
    )


def event_params(
    action_id: int,
    event: str,
    *,
    host: str,
    start: dt.datetime | None,
    result: str | None,
    traceback: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The parameters of :func:`event_upsert`. A retry keeps the event's first
    start time, as Nova's event does; an event without a result is in progress."""
    now = now or utcnow()
    values = {
        "action_id": action_id,
        "event": event,
        "host": host,
        "start_time": start or now,
        "finish_time": now if result is not None else None,
        "result": result,
        "traceback": traceback,
    }
    return {f"b_{k}": v for k, v in values.items()}


def record_event(session: Session, params: dict[str, Any]) -> None:
    """Write an action event (see :func:`event_params`) in one statement:
    insert it, or update it on a retry."""
    session.execute(event_upsert(session.get_bind().dialect.name), params)


@functools.cache
def finish_action_statement(error: bool) -> Any:
    """Mark action ``b_action_id`` finished at ``b_now``; built once per outcome."""
    table = InstanceAction.metadata.tables[InstanceAction.__tablename__]
    values: dict[str, Any] = {"finish_time": bindparam("b_now")}
    if error:
        values["message"] = "Error"
    return update(table).where(table.c.id == bindparam("b_action_id")).values(values)


def finish_action(session: Session, action_id: int, *, error: bool = False) -> None:
    """Mark an action finished; Nova's action says "Error" once any event failed."""
    session.execute(finish_action_statement(error), {"b_action_id": action_id, "b_now": utcnow()})


def add_fault(
    session: Session, instance_uuid: str, exc: BaseException, host: str | None, details: str | None
) -> None:
    code = getattr(exc, "code", 500)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    session.add(
        InstanceFault(
            instance_uuid=instance_uuid,
            code=code if isinstance(code, int) else 500,
            message=message[:255],
            details=details,
            host=host,
        )
    )
