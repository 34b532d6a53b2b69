"""The Celery application, built from settings when a process starts.

Routing is not configured here: every signature gets its queue from
:mod:`resizeflow.workflows`, the one module that knows hosts and queues.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from resizeflow.conf import Settings

# The longest a step may legitimately stay unacknowledged: its own run time plus
# every retry's backoff. Redis redelivers an unacked message after the
# visibility timeout, so a shorter value would run a slow step twice at once.
VISIBILITY_TIMEOUT = 3600


def transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis", "rediss")):
        options["visibility_timeout"] = VISIBILITY_TIMEOUT
        if settings.broker_prefix:
            options["global_keyprefix"] = settings.broker_prefix
    return options


def make_app(settings: Settings) -> Celery:
    app = Celery("resizeflow", broker=settings.broker_url, include=["resizeflow.tasks"])
    app.conf.update(
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        result_accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue="resizeflow",
        worker_hijack_root_logger=False,
        broker_heartbeat=0,
    )
    app.conf.resizeflow_settings = settings
    return app
