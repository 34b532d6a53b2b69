"""Handing a dead worker's unacknowledged messages back to its host's queue at once.

Steps are acknowledged late (``acks_late``): a worker holds each message it
took, the step it is running and the ones it prefetched, until the step ends.
When the worker dies without a goodbye, RabbitMQ gives those messages back as
soon as its connection drops. Redis cannot know a consumer is gone: Kombu
keeps each taken message in an ``unacked`` hash and gives it back only after
the visibility timeout, an hour or more here (see
:func:`resizeflow.celery_app.visibility_timeout`). Until then the workflow
waits, and the reconciler re-drives it only after its deadline.

Only a host's own worker processes consume its queue. So a process that
joins its host and finds no other process of it alive knows that every
unacknowledged message of that queue was taken by a dead one, and puts them
back at the head of the queue before it starts consuming. A message whose
step did run before the death is harmless when delivered again: the journal
finds the step done (see :mod:`resizeflow.runner.delivery`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery

from resizeflow.brokerloss import is_redis

log = logging.getLogger(__name__)


def _queues_of(channel: Any, exchange: str, routing_key: str) -> list[str]:
    """The queues a message published to ``exchange`` with ``routing_key`` went to."""
    try:
        return list(channel._lookup(exchange, routing_key))
    except Exception:  # an exchange with no bindings left: the routing key names the queue
        return [routing_key]


def restore_unacked(app: Celery, queue: str) -> int:
    """On Redis, put every unacknowledged message of ``queue`` back at its head;
    returns how many. Any other broker gives them back itself: 0.

    Only for a process that is its host's one live process (see
    :class:`resizeflow.db.services.Joined`): any other would take messages
    that live processes of the host are running.
    """
    with app.connection_for_write() as conn:
        if not is_redis(conn):
            return 0
        # Kombu's Redis channel: its unacked hash and its QoS are not on the
        # generic channel type.
        channel: Any = conn.default_channel
        client = channel.client
        restored = 0
        for tag, raw in client.hgetall(channel.unacked_key).items():
            _payload, exchange, routing_key = json.loads(raw)
            if queue in _queues_of(channel, exchange, routing_key):
                # One transaction per message: it leaves the hash and enters the
                # queue together, or neither (Kombu's own restore does the same).
                channel.qos.restore_by_tag(tag, client)
                restored += 1
    if restored:
        log.warning("gave %d unacknowledged messages of %s back to the queue", restored, queue)
    return restored
