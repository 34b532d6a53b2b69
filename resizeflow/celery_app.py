"""The Celery application, built from settings when a process starts.

Routing is not configured here: every signature gets its queue from
:mod:`resizeflow.routing`, the one module that knows hosts and queues.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from resizeflow.conf import Settings


def visibility_timeout(settings: Settings) -> int:
    """How long Redis waits for an unacknowledged message before redelivering it.

    With ``acks_late`` a message stays unacknowledged while its step runs, and
    a retry is a message held by the worker until its countdown ends. If either
    outlasts the visibility timeout, Redis hands the message to another worker
    and the step runs twice at once. So the timeout covers the longest step
    plus every retry's longest backoff, and never drops below Celery's hour.
    """
    budget = settings.step_timeout + (settings.step_max_retries + 1) * settings.retry_backoff_max
    return int(max(3600, budget * 2))


def transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis", "rediss")):
        options["visibility_timeout"] = visibility_timeout(settings)
        if settings.broker_prefix:
            options["global_keyprefix"] = settings.broker_prefix
    elif settings.broker_url.startswith(("amqp", "amqps")):
        # Publisher confirms: a step's next message is not lost in the broker's buffers.
        options["confirm_publish"] = True
    return options


def make_app(settings: Settings, include: tuple[str, ...] = ("resizeflow.tasks",)) -> Celery:
    # NOTE: the benchmark's no-op tasks are not included: its own worker
    # entry point (bench.worker) imports them, so production workers never
    # register them.
    # The storage host's worker includes only its own tasks (resizeflow.storage.tasks).
    app = Celery("resizeflow", broker=settings.broker_url, include=list(include))
    options = transport_options(settings)
    app.conf.update(
        broker_transport_options=options,
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
        # NOTE: after a reconnect with steps still running, Celery lowers the
        # prefetch count and raises it again as each of those steps ends,
        # with basic.qos sent from the thread that ran the step. Seen here
        # after a RabbitMQ vhost was dropped and came back: once the count was
        # "restored", the consumer received nothing more until the watchdog
        # restarted the worker (celery#9512 is the same feature stuck in
        # another way). Prefetch is one per pool thread anyway.
        worker_enable_prefetch_count_reduction=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue="resizeflow",
        worker_hijack_root_logger=False,
    )
    if "visibility_timeout" in options:
        # Celery reads the timeout from each of these places (celery#7651).
        app.conf.visibility_timeout = options["visibility_timeout"]
        app.conf.result_backend_transport_options = {
            "visibility_timeout": options["visibility_timeout"]
        }
    app.conf.resizeflow_settings = settings
    return app
