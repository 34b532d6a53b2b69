"""Prometheus metrics, computed from the database and the broker at scrape time.

The step journal already records every workflow and step with its host and
times, so the API process can report on work that ran in other processes
without any shared in-memory counters:

- ``resizeflow_workflows_started_total`` / ``_finished_total`` / ``_failed_total``
  by kind (resize, confirm, revert);
- ``resizeflow_step_duration_seconds``, a histogram by step and host;
- ``resizeflow_queue_depth`` per host queue;
- ``resizeflow_migrations`` per status.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
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
from sqlalchemy import func, select

from resizeflow import workflows
from resizeflow.db import journal
from resizeflow.db.models import ComputeNode, Migration, StepJournal
from resizeflow.db.session import Database

log = logging.getLogger(__name__)

BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _histogram(samples: Iterable[float]) -> tuple[list[tuple[str, float]], float]:
    counts = [0] * (len(BUCKETS) + 1)
    total = 0.0
    for value in samples:
        counts[bisect.bisect_left(BUCKETS, value)] += 1
        total += value
    cumulative, running = [], 0
    for bound, count in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
        running += count
        cumulative.append((bound, float(running)))
    return cumulative, total


class ResizeflowCollector(Collector):
    def __init__(self, database: Database, app: Celery | None = None) -> None:
        self.db = database
        self.app = app

    def collect(self) -> Iterator[Metric]:
        yield from self._workflows()
        yield from self._migrations()
        if self.app is not None:
            yield from self._queues()

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
        durations: dict[tuple[str, str], list[float]] = defaultdict(list)
        per_flow: dict[tuple[int, str], list[StepJournal]] = defaultdict(list)
        with self.db.snapshot() as s:
            for row in s.scalars(select(StepJournal)):
                per_flow[(row.migration_id, row.flow)].append(row)
                if row.status == journal.DONE and row.started_at and row.finished_at:
                    seconds = (row.finished_at - row.started_at).total_seconds()
                    durations[(row.step, row.host)].append(max(seconds, 0.0))
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for (_mig, flow), rows in per_flow.items():
            last = max(rows, key=lambda r: r.position)
            counts[flow][0] += 1
            counts[flow][1] += last.status == journal.DONE
            counts[flow][2] += any(r.status == journal.FAILED for r in rows)
        for flow in workflows.FLOWS:
            s_, f_, x_ = counts.get(flow, [0, 0, 0])
            started.add_metric([flow], s_)
            finished.add_metric([flow], f_)
            failed.add_metric([flow], x_)
        yield from (started, finished, failed)
        hist = HistogramMetricFamily(
            "resizeflow_step_duration_seconds",
            "Time from a step's first start to its finish, by step and host",
            labels=["step", "host"],
        )
        for (step, host), samples in sorted(durations.items()):
            buckets, total = _histogram(samples)
            hist.add_metric([step, host], buckets, total)
        yield hist

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
            "resizeflow_queue_depth", "Messages waiting in each host queue", labels=["queue"]
        )
        with self.db.snapshot() as s:
            hosts = sorted(set(s.scalars(select(ComputeNode.host))))
        try:
            with self.app.connection_for_read() as conn:
                for host in hosts:
                    queue = workflows.queue_for(host)
                    gauge.add_metric([queue], _depth(conn, queue))
        except Exception as exc:  # a scrape must not fail because the broker hiccupped
            log.warning("queue depth unavailable: %s", exc)
        yield gauge


def _depth(conn: Any, queue: str) -> int:
    # A fresh channel per queue: on AMQP a failed passive declare closes it.
    channel = conn.channel()
    try:
        _name, depth, _consumers = channel.queue_declare(queue=queue, passive=True)
        return int(depth)
    except conn.channel_errors:
        return 0  # never declared, or (on Redis) declared and empty
    finally:
        channel.close()


def render(database: Database, app: Celery | None = None) -> bytes:
    """The exposition text for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ResizeflowCollector(database, app))
    return generate_latest(registry)
