"""The oslo.messaging 2.0 envelope of resizeflow's versioned notifications, and the
queues and exchange Nova's consumers read, without a broker. What real workers
publish is held to Nova's samples in tests/functional/test_notifications.py.
"""

from __future__ import annotations

import json
import re

import pytest
from kombu import Connection

from resizeflow.openstack.base import Notification
from resizeflow.openstack.notifier import (
    KombuNotifier,
    envelope,
    message,
    notification_queue,
    unwrap,
)


@pytest.mark.fast
def test_the_wire_is_oslo_messagings() -> None:
    payload = {"nova_object.data": {"uuid": "u1", "request_id": "req-1"}}
    payload["nova_object.data"] |= {"action_initiator_user": "alice"}
    payload["nova_object.data"] |= {"action_initiator_project": "p1"}
    note = Notification("instance.resize.start", "nova-compute:h1", payload, priority="INFO")
    body = envelope(note)
    assert set(body) == {"oslo.version", "oslo.message"} and body["oslo.version"] == "2.0"
    assert isinstance(body["oslo.message"], str)
    inner = unwrap(json.loads(json.dumps(body)))
    assert set(inner) == {
        "message_id",
        "publisher_id",
        "event_type",
        "priority",
        "payload",
        "timestamp",
        "_unique_id",
        "_context_request_id",
        "_context_global_request_id",
        "_context_user_id",
        "_context_user",
        "_context_project_id",
        "_context_project",
    }
    assert (inner["priority"], inner["payload"]) == ("INFO", payload)
    assert (inner["_context_user_id"], inner["_context_project_id"]) == ("alice", "p1")
    assert inner["_context_request_id"] == "req-1"
    assert TIMESTAMP.fullmatch(inner["timestamp"])
    # An exception's payload names no request: no context, as Nova's has none to give here.
    bare = unwrap(envelope(Notification("compute.exception", "nova-compute:h1", {}, "ERROR")))
    assert not [k for k in bare if k.startswith("_context_")]
    with pytest.raises(ValueError, match=r"not an oslo\.messaging 2\.0 envelope"):
        unwrap(message(note))
    # Nova's names; neither durable nor auto-deleted, as oslo.messaging declares them.
    queue = notification_queue("ERROR")
    assert (queue.name, queue.routing_key) == ("versioned_notifications.error",) * 2
    assert queue.exchange is not None
    assert (queue.exchange.name, queue.exchange.type) == ("nova", "topic")
    assert (queue.durable, queue.auto_delete) == (False, False)
    assert (queue.exchange.durable, queue.exchange.auto_delete) == (False, False)
    durable = KombuNotifier(Connection("memory://"), durable=True)
    assert durable.exchange.durable and notification_queue(durable=True).durable


# oslo.messaging's timestamp: str() of a naive UTC datetime.
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?")
