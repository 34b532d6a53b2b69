"""The step runner's messages on PostgreSQL (its journal store): a claim, the step's BEGIN
and its lock in one round trip, the claim committed on its own; the step's writes and
COMMIT in one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from psycopg import pq
from sqlalchemy import event, select

from resizeflow import flows
from resizeflow.conf import Settings
from resizeflow.db import journal
from resizeflow.db.migrate import upgrade
from resizeflow.db.models import Instance, StepJournal
from resizeflow.db.session import Database
from resizeflow.runner.stores import PostgresStore
from resizeflow.states import JournalStatus, PowerState, TaskState, VmState
from resizeflow.steps.context import HostRuntime
from tests.support.stack import PG_ADMIN_URL, create_pg_database, drop_pg_database

WORKER = "compute-1@here/100"
STOP = flows.STOP.last


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[HostRuntime]:
    from tests.support.stack import require

    require(PG_ADMIN_URL, 5432, "PostgreSQL")
    url = create_pg_database()
    settings = Settings(state_dir=tmp_path, host="compute-1", database_url=url)
    database = Database(url, pool_pre_ping=False)
    try:
        upgrade(database)
        none = cast(Any, None)  # no driver and no notifier: these tests never reach them
        yield HostRuntime(
            settings=settings, db=database, virt=none, notifier=none, incarnation=WORKER
        )
    finally:
        database.dispose()
        drop_pg_database(url)


def stopping_instance(db: Database) -> str:
    uid = str(uuid.uuid4())
    with db.transaction() as s:
        s.add(
            Instance(
                uuid=uid,
                project_id="p",
                user_id="u",
                host="compute-1",
                node="compute-1",
                flavor={"vcpus": 1, "memory_mb": 64, "root_gb": 1},
                vm_state=VmState.ACTIVE,
                task_state=TaskState.POWERING_OFF,
            )
        )
        journal.plan(
            s,
            "stop",
            [journal.PlannedStep(STOP.task, "compute-1")],
            instance_uuid=uid,
            request_id="req-1",
        )
    return uid


def statements(db: Database) -> list[str]:
    sent: list[str] = []

    @event.listens_for(db.engine, "after_cursor_execute")
    def _sent(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    return sent


def journal_row(db: Database, uid: str) -> StepJournal:
    with db.snapshot() as s:
        return s.scalars(select(StepJournal).where(StepJournal.instance_uuid == uid)).one()


def claimant(uid: str, holder: str) -> journal.Claimant:
    return journal.Claimant(flows.Subject.INSTANCE, uid, STOP.task, WORKER, holder, 30)


def test_the_claim_and_the_lock_take_one_round_trip_and_the_claim_commits_alone(
    runtime: HostRuntime,
) -> None:
    uid = stopping_instance(runtime.db)
    store = PostgresStore(runtime)
    sent = statements(runtime.db)
    with runtime.db.session() as s:
        opening = store.open(s, claimant(uid, "token-1"))
        claim, ctx = opening.claim, opening.ctx
        assert len(sent) == 1
        assert claim is not None and claim.taken and claim.status == JournalStatus.RUNNING
        assert opening.locked and ctx is not None
        assert ctx.instance.uuid == uid and ctx.journal.id == claim.row_id
        # The lock runs in the step's transaction, which is open on the server.
        conn: Any = s.connection().connection.driver_connection
        assert conn.pgconn.transaction_status == pq.TransactionStatus.INTRANS
        # The step fails: its transaction rolls back, and the claim stays on record.
        s.rollback()
    row = journal_row(runtime.db, uid)
    assert (row.status, row.attempts, row.holder) == (JournalStatus.RUNNING, 1, "token-1")


def test_a_duplicate_delivery_claims_nothing_and_locks_nothing(runtime: HostRuntime) -> None:
    uid = stopping_instance(runtime.db)
    store = PostgresStore(runtime)
    with runtime.db.session() as first:
        store.open(first, claimant(uid, "token-1"))
        first.rollback()
    with runtime.db.session() as second:
        claim = store.open(second, claimant(uid, "token-2")).claim
        assert claim is not None and not claim.taken
    row = journal_row(runtime.db, uid)
    assert (row.holder, row.attempts, row.deliveries) == ("token-1", 1, 2)


def test_pending_changes_the_finish_and_the_commit_take_one_round_trip(
    runtime: HostRuntime,
) -> None:
    uid = stopping_instance(runtime.db)
    store = PostgresStore(runtime)
    with runtime.db.session() as s:
        opening = store.open(s, claimant(uid, "token-1"))
        assert opening.claim is not None and opening.locked and opening.ctx is not None
        ctx = opening.ctx
        ctx.instance.power_state = PowerState.SHUTDOWN
        ctx.instance.vm_state = VmState.STOPPED
        ctx.instance.task_state = None
        sent = statements(runtime.db)
        store.finish(s, ctx.journal, ends_action=True, commit=True)
        assert len(sent) == 1 and sent[0].rstrip().endswith("COMMIT")
        # Nothing is left for the session's own commit to send.
        assert not any(s.is_modified(obj) for obj in s.dirty)
        conn: Any = s.connection().connection.driver_connection
        assert conn.pgconn.transaction_status == pq.TransactionStatus.IDLE
        s.commit()
        assert len(sent) == 1
    with runtime.db.snapshot() as s:
        inst = s.get(Instance, uid)
        assert inst is not None
        assert (inst.vm_state, inst.task_state, inst.power_state) == (
            VmState.STOPPED,
            None,
            PowerState.SHUTDOWN,
        )
    row = journal_row(runtime.db, uid)
    assert (row.status, row.applied) == (JournalStatus.DONE, 1)


def test_a_lock_that_opens_its_transaction_holds_its_rows_in_it(runtime: HostRuntime) -> None:
    uid = stopping_instance(runtime.db)
    store = PostgresStore(runtime)
    with runtime.db.autocommit() as conn:
        claim = journal.claim(conn, claimant(uid, "t"))
    assert claim is not None
    with runtime.db.session() as s, s.begin():
        ctx = store.lock(s, flows.Subject.INSTANCE, claim.row_id, begins=True)
        assert ctx is not None
        with runtime.db.engine.connect() as other:
            other.exec_driver_sql("SET lock_timeout = '100ms'")
            with pytest.raises(Exception, match="lock timeout"):
                other.execute(select(Instance.uuid).where(Instance.uuid == uid).with_for_update())
