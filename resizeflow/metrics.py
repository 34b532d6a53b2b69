"""Prometheus metrics, computed from the database and the broker at scrape time.

The step journal already records every workflow and step with its host and
times, so the API process can report on work that ran in other processes
without any shared in-memory counters:

- ``resizeflow_workflows_started_total`` / ``_finished_total`` / ``_failed_total``
  by kind (resize, confirm, revert);
- ``resizeflow_step_duration_seconds``, a histogram by step and host;
- ``resizeflow_step_retries_total``, attempts beyond a step's first, by step and host;
- ``resizeflow_instance_actions_total`` / ``_finished_total``, the instance
  operations (create, stop, start, resize, confirmResize, ...) by action;
- ``resizeflow_queue_depth`` per host queue, ``resizeflow_periodic_queue_depth``;
- ``resizeflow_host_up`` per host, ``resizeflow_worker_up`` and
  ``resizeflow_worker_heartbeat_age_seconds`` per host and worker process;
- ``resizeflow_migrations`` per status;
- ``resizeflow_broker_losses_total``, the times the broker was found to have
  lost its data, and ``resizeflow_broker_loss_redrives_total``, the workflows
  re-driven at once because of it (see :mod:`resizeflow.brokerloss`).

Every metric about a compute host labels it ``host``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

from celery import Celery
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, case, func, select

from resizeflow import flows, routing
from resizeflow.db import services
from resizeflow.db.models import (
    BrokerEpoch,
    ComputeNode,
    InstanceAction,
    Migration,
    Service,
    StepJournal,
    utcnow,
)
from resizeflow.db.session import Database
from resizeflow.states import JournalStatus

log = logging.getLogger(__name__)

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _seconds(dialect: str) -> Any:
    """A finished step's duration in seconds, as SQL; never negative."""
    j = StepJournal
    took: ColumnElement[Any]
    if dialect == "postgresql":
        # date_part is double precision; EXTRACT is numeric from PostgreSQL 14,
        # several times slower over every journal row of a scrape.
        took = func.date_part("epoch", j.finished_at - j.started_at)
    else:
        took = (func.julianday(j.finished_at) - func.julianday(j.started_at)) * 86400.0
    return case((took < 0, 0.0), else_=took)


def _last_position() -> Any:
    """The position of each flow's last step, as SQL, from the one table of flows."""
    return case(
        *((StepJournal.flow == name, len(flow.steps) - 1) for name, flow in flows.FLOWS.items()),
        else_=-1,
    )


class ResizeflowCollector(Collector):
    def __init__(
        self, database: Database, app: Celery | None = None, service_down_time: float = 60.0
    ) -> None:
        self.db = database
        self.app = app
        self.down_time = service_down_time

    def collect(self) -> Iterator[Metric]:
        yield from self._workflows()
        yield from self._retries()
        yield from self._actions()
        yield from self._migrations()
        yield from self._liveness()
        yield from self._broker_losses()
        if self.app is not None:
            yield from self._queues()

    def _retries(self) -> Iterator[Metric]:
        j = StepJournal
        retries = CounterMetricFamily(
            "resizeflow_step_retries",
            "Attempts of a step beyond its first, by step and host",
            labels=["step", "host"],
        )
        extra = func.sum(case((j.attempts > 1, j.attempts - 1), else_=0))
        with self.db.snapshot() as s:
            rows = s.execute(
                select(j.step, j.host, extra).group_by(j.step, j.host).order_by(j.step, j.host)
            ).all()
        for step, host, count in rows:
            retries.add_metric([step, host], int(count or 0))
        yield retries

    def _actions(self) -> Iterator[Metric]:
        a = InstanceAction
        started = CounterMetricFamily(
            "resizeflow_instance_actions",
            "Instance operations requested (Nova's instance actions), by action",
            labels=["action"],
        )
        finished = CounterMetricFamily(
            "resizeflow_instance_actions_finished",
            "Instance operations that have ended, by action",
            labels=["action"],
        )
        with self.db.snapshot() as s:
            rows = s.execute(
                select(a.action, func.count(), func.count(a.finish_time))
                .group_by(a.action)
                .order_by(a.action)
            ).all()
        for action, count, ended in rows:
            started.add_metric([action], int(count))
            finished.add_metric([action], int(ended))
        yield from (started, finished)

    def _liveness(self) -> Iterator[Metric]:
        host_up = GaugeMetricFamily(
            "resizeflow_host_up",
            "1 while any worker process of the compute host is alive (Nova's service state)",
            labels=["host"],
        )
        worker_up = GaugeMetricFamily(
            "resizeflow_worker_up",
            "1 while the worker process beats, by host and Celery node",
            labels=["host", "worker"],
        )
        age = GaugeMetricFamily(
            "resizeflow_worker_heartbeat_age_seconds",
            "Seconds since the worker process's last heartbeat",
            labels=["host", "worker"],
        )
        machine, now = socket.gethostname(), utcnow()
        with self.db.snapshot() as s:
            for svc in s.scalars(
                select(Service).where(Service.binary == services.COMPUTE).order_by(Service.host)
            ):
                host_up.add_metric([svc.host], int(services.is_up(svc, self.down_time, now)))
            for proc in services.processes(s):
                alive = services.process_alive(proc, self.down_time, machine, now)
                worker_up.add_metric([proc.host, proc.node], int(alive))
                age.add_metric(
                    [proc.host, proc.node], max(0.0, (now - proc.last_seen_at).total_seconds())
                )
        yield from (host_up, worker_up, age)

    def _workflows(self) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "resizeflow_workflows_started", "Workflows started, by kind", labels=["kind"]
        )
        finished = CounterMetricFamily(
            "resizeflow_workflows_finished", "Workflows whose last step is done", labels=["kind"]
        )
        failed = CounterMetricFamily(
            "resizeflow_workflows_failed", "Workflows with a step failed for good", labels=["kind"]
        )
        j = StepJournal
        # NOTE: aggregates, not rows: a scrape costs one scan in the database
        # however long the journal has grown, and no Python object per step.
        # Every planned flow has a row at position 0, and it ends with the row
        # at its last position. Rows are never deleted, and a step's work once
        # committed stays counted (``applied``) even if an abort later
        # supersedes its row, so these counters never go down.
        last_done = (j.applied > 0) & (j.position == _last_position())
        failed_row = j.status == JournalStatus.FAILED
        by_flow = select(
            j.flow,
            func.sum(case((j.position == 0, 1), else_=0)),
            func.sum(case((last_done, 1), else_=0)),
            # A migration's flow fails once however many of its steps did; an
            # instance operation is its one row.
            func.count(func.distinct(case((failed_row, j.migration_id))))
            + func.sum(case((failed_row & j.migration_id.is_(None), 1), else_=0)),
        ).group_by(j.flow)
        with self.db.snapshot() as s:
            counts = {flow: (int(a), int(b), int(c)) for flow, a, b, c in s.execute(by_flow)}
            seconds = _seconds(s.get_bind().dialect.name)
            by_step = (
                select(
                    j.step,
                    j.host,
                    func.count(),
                    func.sum(seconds),
                    *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in BUCKETS),
                )
                .where(j.applied > 0, j.started_at.is_not(None), j.finished_at.is_not(None))
                .group_by(j.step, j.host)
                .order_by(j.step, j.host)
            )
            durations = s.execute(by_step).all()
        for flow in flows.FLOWS:
            s_, f_, x_ = counts.get(flow, (0, 0, 0))
            started.add_metric([flow], s_)
            finished.add_metric([flow], f_)
            failed.add_metric([flow], x_)
        yield from (started, finished, failed)
        hist = HistogramMetricFamily(
            "resizeflow_step_duration_seconds",
            "Time from a step's first start to its finish, by step and host",
            labels=["step", "host"],
        )
        for step, host, count, total, *cumulative in durations:
            buckets = [(str(b), float(n)) for b, n in zip(BUCKETS, cumulative, strict=True)]
            hist.add_metric([step, host], [*buckets, ("+Inf", float(count))], float(total or 0.0))
        yield hist

    def _broker_losses(self) -> Iterator[Metric]:
        losses = CounterMetricFamily(
            "resizeflow_broker_losses", "Times the broker was found to have lost its data"
        )
        redrives = CounterMetricFamily(
            "resizeflow_broker_loss_redrives",
            "Workflows re-driven at once because the broker had lost their next message",
        )
        e = BrokerEpoch
        with self.db.snapshot() as s:
            count, redriven = s.execute(
                select(
                    func.count(case((e.after_loss.is_(True), 1))),
                    func.coalesce(func.sum(e.redriven), 0),
                )
            ).one()
        losses.add_metric([], int(count))
        redrives.add_metric([], int(redriven))
        yield from (losses, redrives)

    def _migrations(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "resizeflow_migrations", "Migrations by status", labels=["status"]
        )
        with self.db.snapshot() as s:
            for status, count in s.execute(
                select(Migration.status, func.count()).group_by(Migration.status)
            ):
                gauge.add_metric([status.value], count)
        yield gauge

    def _queues(self) -> Iterator[Metric]:
        assert self.app is not None
        gauge = GaugeMetricFamily(
            "resizeflow_queue_depth", "Messages waiting in each host's queue", labels=["host"]
        )
        periodic = GaugeMetricFamily(
            "resizeflow_periodic_queue_depth", "Periodic tasks waiting for beat's worker"
        )
        with self.db.snapshot() as s:
            hosts = sorted(set(s.scalars(select(ComputeNode.host))))
        try:
            with self.app.connection_for_read() as conn, _Depths(conn) as depth:
                for host in hosts:
                    gauge.add_metric([host], depth(routing.queue_for(host)))
                periodic.add_metric([], depth(routing.PERIODIC_QUEUE))
        except Exception as exc:  # a scrape must not fail because the broker hiccupped
            log.warning("queue depth unavailable: %s", exc)
        yield from (gauge, periodic)


class _Depths:
    """Queue depths through one channel, opened again only after a failed lookup.

    NOTE: opening a channel costs far more than asking for a depth (on Redis,
    a client and its connection pool), and a scrape asks for every host's.
    On AMQP a failed passive declare (a queue never declared) closes the
    channel, so the next lookup needs a new one.
    """

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.channel: Any = None
        self.redis = conn.transport.driver_type == "redis"

    def __enter__(self) -> _Depths:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._close()

    def _close(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            try:
                channel.close()
            except self.conn.connection_errors + self.conn.channel_errors:
                pass  # already closed by the broker

    def __call__(self, queue: str) -> int:
        if self.channel is None:
            self.channel = self.conn.channel()
        if self.redis:
            # NOTE: the length of the queue's lists, as kombu's own passive
            # declare counts it; that declare first checks the list exists
            # with an EXISTS that kombu 5.7 does not prefix, so under a
            # RESIZEFLOW_BROKER_PREFIX it finds no queue and every depth was 0.
            return int(self.channel._size(queue))
        try:
            _name, depth, _consumers = self.channel.queue_declare(queue=queue, passive=True)
            return int(depth)
        except self.conn.channel_errors:
            self._close()
            return 0  # never declared, or (on Redis) declared and empty


def render(database: Database, app: Celery | None = None) -> bytes:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    down_time = 60.0 if app is None else app.conf.resizeflow_settings.service_down_time
    registry.register(ResizeflowCollector(database, app, down_time))
    return generate_latest(registry)
