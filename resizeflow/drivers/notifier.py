"""Nova-style versioned notifications, published with kombu on the broker.

They go to the topic exchange ``nova`` with routing key ``notifications.<priority>``,
where Nova's notifier puts them, so existing consumers can listen unchanged.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from kombu import Connection, Exchange, Queue, pools

from resizeflow.drivers.base import Notification

EXCHANGE = Exchange("nova", type="topic", durable=True)


def notification_queue(priority: str = "info") -> Queue:
    return Queue(f"notifications.{priority}", EXCHANGE, routing_key=f"notifications.{priority}")


def envelope(note: Notification) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "publisher_id": note.publisher_id,
        "event_type": note.event_type,
        "priority": note.priority,
        "payload": note.payload,
        "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
    }


class KombuNotifier:
    """Publishes through kombu's shared producer pool for one broker connection."""

    def __init__(self, connection: Connection, *, enabled: bool = True) -> None:
        self.connection = connection
        self.enabled = enabled

    def publish(self, notifications: Sequence[Notification]) -> None:
        if not self.enabled or not notifications:
            return
        with pools.producers[self.connection].acquire(block=True, timeout=10) as producer:
            for note in notifications:
                queue = notification_queue(note.priority.lower())
                producer.publish(
                    envelope(note),
                    serializer="json",
                    exchange=EXCHANGE,
                    routing_key=queue.routing_key,
                    declare=[queue],
                    retry=True,
                    retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.5},
                )


class NullNotifier:
    def publish(self, notifications: Sequence[Notification]) -> None:
        return None
