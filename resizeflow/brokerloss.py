"""Noticing that the broker lost its data, and re-driving at once what it held.

A broker that restarts without persistence (Redis with no RDB/AOF, a
RabbitMQ node that lost its disk or vhost) comes back empty: the next message
of every workflow in flight is gone. The reconciler would find each of them
after ``RESIZEFLOW_RECONCILE_DEADLINE``; this module finds the loss itself.

An *epoch* is one lifetime of the broker's data. Its token is recorded in the
database (:class:`~resizeflow.db.models.BrokerEpoch`) and in the broker, as
something the broker loses exactly when it loses its queues:

- on Redis, a hash key next to the queues (under the stack's key prefix);
- on RabbitMQ, a durable queue named after the token: it survives a restart
  that keeps durable queues and their persistent messages, and goes with
  them (and with the vhost).

Beat checks the marker every ``RESIZEFLOW_BROKER_CHECK_INTERVAL`` seconds. A
broker that answers but no longer has it has lost its data: the checker that
records the next epoch (its sequence number is unique, so one checker wins
per loss) re-drives every workflow whose next message was sent before then,
and only then writes the new marker. A broker that does not answer is only
down; nothing is decided until it answers. An epoch whose marker was never
seen in the broker cannot be lost: its marker is written again instead, so a
broker that refuses or drops the marker does not cause a re-drive per check.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from resizeflow import recovery
from resizeflow.conf import Settings
from resizeflow.db.models import BrokerEpoch, utcnow
from resizeflow.db.session import Database

log = logging.getLogger(__name__)

MARKER = "resizeflow.broker-epoch"


class BrokerUnreachable(Exception):
    """The broker did not answer the check: it may be down, which is not a loss."""


def is_redis(conn: Any) -> bool:
    return str(conn.transport.driver_type) == "redis"


def marker_queue(token: str) -> str:
    return f"{MARKER}.{token}"


def has_marker(conn: Any, token: str) -> bool:
    """Whether the broker holds ``token``'s marker; raises BrokerUnreachable if it cannot say."""
    try:
        if is_redis(conn):
            # HGET/HSET, not GET/SET: kombu adds the stack's key prefix to
            # these, as it does to the queues' keys.
            value = conn.default_channel.client.hget(MARKER, "token")
            return value is not None and value.decode() == token
        channel = conn.channel()
    except Exception as exc:
        raise BrokerUnreachable(str(exc)) from exc
    try:
        channel.queue_declare(queue=marker_queue(token), passive=True)
        return True
    except conn.channel_errors:
        return False  # NOT_FOUND: the broker answered, and has no such queue
    except Exception as exc:
        raise BrokerUnreachable(str(exc)) from exc
    finally:
        # The broker closes the channel itself after NOT_FOUND.
        with contextlib.suppress(Exception):
            channel.close()


def write_marker(conn: Any, token: str, previous: str | None = None) -> None:
    if is_redis(conn):
        conn.default_channel.client.hset(MARKER, "token", token)
        return
    channel = conn.channel()
    try:
        channel.queue_declare(queue=marker_queue(token), durable=True, auto_delete=False)
        if previous is not None:
            # An earlier epoch's queue that survived (a restart that kept
            # durable queues but was found without this one) is of no use.
            channel.queue_delete(queue=marker_queue(previous))
    finally:
        channel.close()


def current_epoch(database: Database) -> BrokerEpoch | None:
    with database.snapshot() as s:
        return s.scalars(select(BrokerEpoch).order_by(BrokerEpoch.seq.desc()).limit(1)).first()


def _new_epoch(database: Database, seq: int, *, after_loss: bool) -> BrokerEpoch | None:
    """Record epoch ``seq``; None when another checker recorded it first."""
    try:
        with database.transaction() as s:
            epoch = BrokerEpoch(seq=seq, token=uuid.uuid4().hex, after_loss=after_loss, redriven=0)
            s.add(epoch)
            s.flush()
            s.expunge(epoch)
            return epoch
    except IntegrityError:
        return None


class Checker:
    """One process's view of the broker's epoch; :meth:`check` is one look."""

    def __init__(self, settings: Settings, database: Database, app: Celery) -> None:
        self.settings, self.database, self.app = settings, database, app
        self.token: str | None = None

    def _connection(self) -> Any:
        # A fresh connection for every check: a pooled one may be a dead
        # socket to the broker from before its restart.
        return self.app.connection_for_write(connect_timeout=5)

    def check(self) -> BrokerEpoch | None:
        """Look once; returns the epoch this look started (after a loss, or the first one).

        Raises BrokerUnreachable when the broker does not answer.
        """
        with self._connection() as conn:
            if self.token is not None and has_marker(conn, self.token):
                return None  # the usual case: one round trip to the broker
            latest = current_epoch(self.database)
            if latest is None:
                # The first check of this deployment: nothing to compare with.
                first = _new_epoch(self.database, 1, after_loss=False)
                if first is not None:
                    log.info("broker epoch 1 recorded")
                    self._mark(conn, first)
                return first
            if latest.marked_at is None:
                # Its checker is still re-driving, or died doing so, or could
                # not write the marker. A marker never seen cannot have been
                # lost: write it, and re-drive nothing. (This is what keeps a
                # broker that refuses the marker from re-driving everything
                # in flight at every check.)
                self._mark(conn, latest)
                return None
            if has_marker(conn, latest.token):
                self.token = latest.token  # another checker moved the epoch on
                return None
            return self._lost(conn, latest)

    def _mark(self, conn: Any, epoch: BrokerEpoch, previous: str | None = None) -> None:
        """Write ``epoch``'s marker, read it back, and record that it was seen."""
        write_marker(conn, epoch.token, previous)
        if not has_marker(conn, epoch.token):
            # The broker answers but does not keep what it is given: not a
            # loss, and not something that fixes itself; the watch logs it.
            raise RuntimeError(f"the broker did not keep broker epoch {epoch.seq}'s marker")
        with self.database.transaction() as s:
            s.execute(
                update(BrokerEpoch)
                .where(BrokerEpoch.id == epoch.id, BrokerEpoch.marked_at.is_(None))
                .values(marked_at=utcnow())
            )
        self.token = epoch.token

    def _lost(self, conn: Any, latest: BrokerEpoch) -> BrokerEpoch | None:
        seen_at = utcnow()
        epoch = _new_epoch(self.database, latest.seq + 1, after_loss=True)
        if epoch is None:
            return None  # another checker won this loss and re-drives it
        log.critical(
            "the broker lost its data (epoch %d's marker is gone); re-driving the workflows "
            "whose next message it held",
            latest.seq,
        )
        # NOTE: the marker is written after the re-drive, so that a check
        # meanwhile (another beat's) does not take the new epoch for lost.
        # A checker that dies in the middle leaves the rest of the re-drive
        # to the reconciler's deadline; the next check only marks the epoch.
        redriven = recovery.reconcile(self.settings, self.database, self.app, lost_before=seen_at)
        with self.database.transaction() as s:
            s.execute(
                update(BrokerEpoch)
                .where(BrokerEpoch.id == epoch.id)
                .values(redriven=BrokerEpoch.redriven + len(redriven))
            )
        log.warning("broker epoch %d: re-drove %d workflows", epoch.seq, len(redriven))
        self._mark(conn, epoch, previous=latest.token)
        return epoch


class BrokerWatch(threading.Thread):
    """Runs :meth:`Checker.check` every ``broker_check_interval`` seconds."""

    def __init__(self, settings: Settings, database: Database, app: Celery) -> None:
        super().__init__(name="resizeflow-broker-watch", daemon=True)
        self.checker = Checker(settings, database, app)
        self.every = settings.broker_check_interval
        self.stopping = threading.Event()

    def run(self) -> None:
        # The first look is at once: a loss while no beat ran is found at start.
        while not self.stopping.is_set():
            try:
                self.checker.check()
            except BrokerUnreachable as exc:
                log.debug("broker check: the broker did not answer: %s", exc)
            except Exception:  # the database may be down; the next look may work
                log.exception("broker check failed; a loss cannot be seen meanwhile")
            self.stopping.wait(self.every)
