"""Nova's versioned notifications, put on the broker where and as Nova puts them.

Nova's versioned notifier is an oslo.messaging ``Notifier`` on the topics of
``[notifications] versioned_notifications_topics`` (``versioned_notifications``),
in the exchange named by ``control_exchange``, which Nova sets to ``nova``.
oslo.messaging sends each notification to the topic exchange ``nova`` with the
routing key ``versioned_notifications.<priority>`` (``.info``, ``.error``, the
priority in lower case), and declares the queue of that name bound to it, so
that what is sent before any consumer starts waits there. Its AMQP drivers wrap
the message in the 2.0 envelope, ``{"oslo.version": "2.0", "oslo.message":
"<the message as a JSON string>"}``; the message holds ``message_id``,
``publisher_id``, ``event_type``, ``priority`` (upper case), ``payload`` and
``timestamp``, with the request's context as ``_context_*`` keys and a
``_unique_id`` the listener drops duplicates by.

KombuNotifier does the same with kombu, so an oslo.messaging notification
listener on topic ``versioned_notifications`` (Nova's own consumers, Ceilometer's)
receives resizeflow's notifications on RabbitMQ unchanged. The exchange and the
queues are declared as oslo.messaging declares them by default, neither durable
nor auto-deleted (``amqp_durable_queues``, ``amqp_auto_delete``): RabbitMQ
refuses a second declaration that differs, so ``RESIZEFLOW_NOTIFICATIONS_DURABLE``
follows a deployment whose oslo.messaging sets ``amqp_durable_queues``. On Redis,
which oslo.messaging has no driver for, kombu's Redis transport keeps the same
exchange, queues and bindings, and a kombu consumer reads the same envelope
(:func:`unwrap` opens it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from kombu import Connection, Exchange, Queue, pools
from kombu.utils import json

from resizeflow.openstack.base import Notification

# Nova's control_exchange, and its default versioned_notifications_topics.
EXCHANGE_NAME = "nova"
TOPIC = "versioned_notifications"
# oslo.messaging's message envelope, version 2.0.
VERSION_KEY, MESSAGE_KEY, ENVELOPE_VERSION = "oslo.version", "oslo.message", "2.0"


def exchange(*, durable: bool = False) -> Exchange:
    return Exchange(EXCHANGE_NAME, type="topic", durable=durable, auto_delete=False)


def routing_key(priority: str) -> str:
    """``versioned_notifications.<priority>``: the routing key and its default queue's name."""
    return f"{TOPIC}.{priority.lower()}"


def notification_queue(priority: str = "info", *, durable: bool = False) -> Queue:
    """The queue oslo.messaging's notifier declares for ``priority``, and its listener reads."""
    key = routing_key(priority)
    return Queue(
        key, exchange(durable=durable), routing_key=key, durable=durable, auto_delete=False
    )


def context_of(note: Notification) -> dict[str, Any]:
    """The request's context, as Nova's notifier sends it beside the payload.

    An instance payload names who asked and the request (Nova fills them
    from the same context); a payload without them has no context.
    """
    data = note.payload.get("nova_object.data") if isinstance(note.payload, Mapping) else None
    if not isinstance(data, Mapping) or not data.get("request_id"):
        return {}
    user, project = data.get("action_initiator_user"), data.get("action_initiator_project")
    return {
        "request_id": data["request_id"],
        "global_request_id": None,
        "user_id": user,
        "user": user,
        "project_id": project,
        "project": project,
    }


def message(note: Notification) -> dict[str, Any]:
    """The notification as oslo.messaging's Notifier builds it, context packed in."""
    return {
        "message_id": str(uuid.uuid4()),
        "publisher_id": note.publisher_id,
        "event_type": note.event_type,
        "priority": note.priority.upper(),
        "payload": note.payload,
        # str() of a naive UTC datetime, as oslo's timeutils.utcnow() gives it.
        "timestamp": str(dt.datetime.now(dt.UTC).replace(tzinfo=None)),
        "_unique_id": uuid.uuid4().hex,
        **{f"_context_{key}": value for key, value in context_of(note).items()},
    }


def envelope(note: Notification) -> dict[str, str]:
    """oslo.messaging's 2.0 envelope around :func:`message`."""
    return {VERSION_KEY: ENVELOPE_VERSION, MESSAGE_KEY: json.dumps(message(note))}


def unwrap(body: Any) -> dict[str, Any]:
    """The message inside an envelope (what a kombu consumer reads): :func:`message`'s dict."""
    if not isinstance(body, Mapping) or body.get(VERSION_KEY) != ENVELOPE_VERSION:
        raise ValueError(f"not an oslo.messaging 2.0 envelope: {body!r}"[:200])
    inner = json.loads(body[MESSAGE_KEY])
    if not isinstance(inner, dict):
        raise ValueError("the envelope's message is not an object")
    return inner


class KombuNotifier:
    """Publishes through kombu's shared producer pool for one broker connection."""

    def __init__(
        self, connection: Connection, *, enabled: bool = True, durable: bool = False
    ) -> None:
        self.connection = connection
        self.enabled = enabled
        self.exchange = exchange(durable=durable)
        self.durable = durable

    def publish(self, notifications: Sequence[Notification]) -> None:
        if not self.enabled or not notifications:
            return
        with pools.producers[self.connection].acquire(block=True, timeout=10) as producer:
            for note in notifications:
                queue = notification_queue(note.priority, durable=self.durable)
                producer.publish(
                    envelope(note),
                    serializer="json",
                    exchange=self.exchange,
                    routing_key=queue.routing_key,
                    # NOTE: the queue is declared with the exchange, as
                    # oslo.messaging's notifier does, so notifications sent
                    # while no consumer listens wait for the first one.
                    declare=[queue],
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5},
                )


class NullNotifier:
    def publish(self, notifications: Sequence[Notification]) -> None:
        return None
