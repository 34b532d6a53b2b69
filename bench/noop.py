"""The baseline: no-op Celery tasks that run on the host queues of the real workers.

A bare chain of these is the floor for a workflow of the same length: same
broker, same worker processes, same ``acks_late`` and prefetch of 1. The last
task of a chain records when it ran, with the worker's clock, in a Redis list
on the broker, which is how the bench sees a chain finish.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from celery import Task, shared_task

NOOP = "bench.noop"
NOOP_LAST = "bench.noop_last"
DONE_KEY = "resizeflow-bench:done"

_clients: dict[str, redis.Redis[bytes]] = {}
_OPTIONS: dict[str, Any] = {"bind": True, "acks_late": True, "reject_on_worker_lost": True}


def redis_url(broker_url: str) -> str:
    """The redis-py URL of a Celery broker URL (``redis+socket://`` becomes ``unix://``)."""
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://")
    return broker_url


def done_key(prefix: str) -> str:
    return prefix + DONE_KEY


def client(broker_url: str) -> redis.Redis[bytes]:
    url = redis_url(broker_url)
    if url not in _clients:
        _clients[url] = redis.Redis.from_url(url)
    return _clients[url]


@shared_task(name=NOOP, **_OPTIONS)  # type: ignore[untyped-decorator,unused-ignore]
def noop(self: Task[Any, Any], token: str) -> str:
    """Do nothing; hand the token on, as a step hands on the migration id."""
    return token


@shared_task(name=NOOP_LAST, **_OPTIONS)  # type: ignore[untyped-decorator,unused-ignore]
def noop_last(self: Task[Any, Any], token: str) -> str:
    """The end of a bare chain: record (token, worker time) on the broker's Redis."""
    now = time.time()
    settings = self.app.conf.resizeflow_settings
    client(settings.broker_url).rpush(
        done_key(settings.broker_prefix), json.dumps({"token": token, "t": now})
    )
    return token
