"""Answers from a host: what a host task sends back to the process that asked.

Most work is cast to a host and recorded in the database. A few requests
need the host's answer itself (a guest's console log, whether a domain is
still defined, a storage host's new connection), as Nova's RPC *call*s do.
The asker (:func:`call`; :func:`resizeflow.routing.ask` for a compute host)
declares a queue of its own, bound to :data:`REPLY_EXCHANGE`, and names it
in the request; the host task runs its work and publishes the result, or the
error it raised, there.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from resizeflow import errors

log = logging.getLogger(__name__)

REPLY_EXCHANGE = Exchange("resizeflow.reply", type="direct", durable=False)


def answer(app: Celery, reply_to: str, work: Callable[[], Any]) -> None:
    """Run ``work`` and send its JSON-serialisable result, or its error, to ``reply_to``."""
    body: dict[str, Any]
    try:
        body = {"value": work()}
    except errors.ResizeflowError as exc:
        body = {"error": {"type": type(exc).__name__, "code": exc.code, "message": exc.message}}
    except Exception as exc:
        log.exception("host call failed")
        body = {"error": {"type": type(exc).__name__, "code": 500, "message": str(exc)}}
    with app.producer_or_acquire() as producer:
        producer.publish(
            body,
            serializer="json",
            exchange=REPLY_EXCHANGE,
            routing_key=reply_to,
            declare=[REPLY_EXCHANGE],
            retry=True,
            retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5},
        )


def result(body: dict[str, Any]) -> Any:
    """The value a host answered with; the error it answered with is raised here."""
    if "error" not in body:
        return body.get("value")
    error = body["error"]
    message = str(error.get("message"))
    cls = getattr(errors, str(error.get("type")), None)
    if isinstance(cls, type) and issubclass(cls, errors.ResizeflowError):
        try:
            raised = cls(message=message)
        except TypeError:  # an error that needs more than its message
            raised = errors.ResizeflowError(message=message)
        raise raised
    raise errors.ResizeflowError(message=message)


def call(app: Celery, queue: str, name: str, *args: Any, timeout: float, host: str) -> Any:
    """Run task ``name`` on ``queue`` and wait for its answer, or raise HostDidNotAnswer.

    The answer comes back on a queue of this call's own, removed afterwards.
    The request expires with the timeout, so a host that is busy or down
    never runs it late.
    """
    reply = f"resizeflow.reply.{uuid.uuid4().hex}"
    bound_queue = Queue(
        reply,
        REPLY_EXCHANGE,
        routing_key=reply,
        durable=False,
        auto_delete=True,
        expires=timeout + 60,  # RabbitMQ drops it even if this process dies
    )
    with app.connection_for_write() as conn:
        bound = bound_queue(conn.default_channel)
        bound.declare()
        try:
            app.send_task(name, args=(*args, reply), queue=queue, expires=timeout, connection=conn)
            deadline = time.monotonic() + timeout
            while (message := bound.get(no_ack=True)) is None:
                if time.monotonic() > deadline:
                    raise errors.HostDidNotAnswer(host=host, timeout=timeout)
                time.sleep(0.05)
        finally:
            with suppress(Exception):
                bound.delete()
    return result(message.payload)
