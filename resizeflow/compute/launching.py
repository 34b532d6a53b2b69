"""Sending what a request planned, once the transaction that planned it has committed.

The service layer writes a workflow's steps into the step journal in the
transaction that accepts the request (:func:`plan`), and sends the chain
only after that transaction commits (:class:`Launcher`). A broker that is
down then costs nothing but time: the plan is durable, and the reconciler
sends it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import kombu.exceptions
from celery import Celery
from sqlalchemy.orm import Session

from resizeflow import flows, routing
from resizeflow.compute.policy import RequestContext
from resizeflow.db import journal
from resizeflow.db.models import Instance, InstanceAction, Migration
from resizeflow.db.session import Database

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


def plan(
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


class Launcher:
    """What sends planned workflows: a database and a Celery app."""

    def __init__(self, database: Database, app: Celery) -> None:
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
