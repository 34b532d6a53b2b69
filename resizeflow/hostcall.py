"""Answers from a compute host: what a host task sends back to the process that asked.

Most work is cast to a host and recorded in the database. A few requests
need the host's answer itself (a guest's console log, whether a domain is
still defined), as Nova's RPC *call*s do. The asker
(:func:`resizeflow.routing.ask`) declares a queue of its own, bound to
:data:`REPLY_EXCHANGE`, and names it in the request; the host task runs its
work and publishes the result, or the error it raised, there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu import Exchange

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
