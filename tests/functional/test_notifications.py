"""Every versioned notification the workers send has the shape of Nova's published samples.

Nova documents each notification with a sample (``doc/notification_samples``):
its event type, priority, and a payload object with a name, a version and a set
of fields, nesting other objects (the flavor, the IP addresses, the fault). The
tables below restate those shapes, field by field and version by version; the
tests drive real workers through resize, confirm, revert and a failure, read
what they published on the broker, and hold every payload to its table.

They are read where Nova's consumers read them: the queues
``versioned_notifications.info`` and ``.error`` of the topic exchange ``nova``,
each message in oslo.messaging's 2.0 envelope. On RabbitMQ an oslo.messaging
notification listener receives them; on Redis, which oslo.messaging has no
driver for, a kombu consumer of the same queues.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import Any

import pytest
from sqlalchemy import select

from resizeflow.db.models import Network, Port
from resizeflow.states import MigrationStatus, VmState
from tests.support.stack import Stack, wait_for
from tests.unit.test_notifications import TIMESTAMP

# The fields of Nova's InstancePayload 1.9, which the instance payloads extend.
INSTANCE = frozenset(
    {
        "uuid", "user_id", "tenant_id", "reservation_id", "display_name",
        "display_description", "host_name", "host", "node", "os_type", "architecture",
        "availability_zone", "image_uuid", "key_name", "kernel_id", "ramdisk_id",
        "created_at", "launched_at", "terminated_at", "deleted_at", "updated_at", "state",
        "power_state", "task_state", "progress", "ip_addresses", "block_devices", "flavor",
        "metadata", "locked", "locked_reason", "auto_disk_config", "request_id",
        "action_initiator_user", "action_initiator_project", "shares",
    }
)  # fmt: skip

# Object name -> (version, fields), as Nova's samples show them.
SHAPES: dict[str, tuple[str, frozenset[str]]] = {
    "InstanceActionPayload": ("1.9", INSTANCE | {"fault"}),
    "InstanceActionResizePrepPayload": ("1.4", INSTANCE | {"fault", "new_flavor"}),
    "InstanceCreatePayload": (
        "1.13",
        INSTANCE | {"fault", "keypairs", "tags", "trusted_image_certificates", "instance_name"},
    ),
    "InstanceExistsPayload": ("2.1", INSTANCE | {"audit_period"}),
    "InstanceActionVolumePayload": ("1.7", INSTANCE | {"fault", "volume_id"}),
    "FlavorPayload": (
        "1.4",
        frozenset(
            {
                "flavorid",
                "name",
                "root_gb",
                "vcpus",
                "ephemeral_gb",
                "memory_mb",
                "disabled",
                "rxtx_factor",
                "extra_specs",
                "projects",
                "swap",
                "is_public",
                "vcpu_weight",
                "description",
            }
        ),
    ),
    "IpPayload": (
        "1.0",
        frozenset({"mac", "address", "port_uuid", "meta", "version", "label", "device_name"}),
    ),
    "BlockDevicePayload": (
        "1.0",
        frozenset({"boot_index", "delete_on_termination", "device_name", "tag", "volume_id"}),
    ),
    "ExceptionPayload": (
        "1.1",
        frozenset({"function_name", "module_name", "exception", "exception_message", "traceback"}),
    ),
    "AuditPeriodPayload": (
        "1.0",
        frozenset({"audit_period_beginning", "audit_period_ending"}),
    ),
}

# Event type -> (payload object, priority).
EVENTS = {
    "instance.create.start": ("InstanceCreatePayload", "INFO"),
    "instance.create.end": ("InstanceCreatePayload", "INFO"),
    "instance.resize_prep.start": ("InstanceActionResizePrepPayload", "INFO"),
    "instance.resize_prep.end": ("InstanceActionResizePrepPayload", "INFO"),
    "instance.resize.start": ("InstanceActionPayload", "INFO"),
    "instance.resize.end": ("InstanceActionPayload", "INFO"),
    "instance.resize_finish.start": ("InstanceActionPayload", "INFO"),
    "instance.resize_finish.end": ("InstanceActionPayload", "INFO"),
    "instance.resize_confirm.start": ("InstanceActionPayload", "INFO"),
    "instance.resize_confirm.end": ("InstanceActionPayload", "INFO"),
    "instance.resize_revert.start": ("InstanceActionPayload", "INFO"),
    "instance.resize_revert.end": ("InstanceActionPayload", "INFO"),
    "instance.resize_confirm.error": ("InstanceActionPayload", "ERROR"),
    "instance.exists": ("InstanceExistsPayload", "INFO"),
    "instance.volume_attach.start": ("InstanceActionVolumePayload", "INFO"),
    "instance.volume_attach.end": ("InstanceActionVolumePayload", "INFO"),
    "instance.volume_detach.start": ("InstanceActionVolumePayload", "INFO"),
    "instance.volume_detach.end": ("InstanceActionVolumePayload", "INFO"),
    "compute.exception": ("ExceptionPayload", "ERROR"),
}


def drain(rf: Stack, priority: str) -> list[dict[str, Any]]:
    """Drain ``versioned_notifications.<priority>`` (Nova routes ERROR notifications to
    their own queue)."""
    return rf.notifications(priority)


def check_object(obj: Any, name: str, where: str) -> None:
    """``obj`` is Nova's object ``name`` at its version, with exactly its fields, recursively."""
    assert isinstance(obj, dict), f"{where}: not an object: {obj!r}"
    assert obj.get("nova_object.name") == name, f"{where}: {obj.get('nova_object.name')}"
    version, fields = SHAPES[name]
    assert obj["nova_object.version"] == version, f"{where}: {name} {obj['nova_object.version']}"
    assert obj["nova_object.namespace"] == "nova"
    data = obj["nova_object.data"]
    assert set(data) == fields, (
        f"{where}: {name} missing {sorted(fields - set(data))}, "
        f"unexpected {sorted(set(data) - fields)}"
    )
    nested = {
        "flavor": "FlavorPayload",
        "new_flavor": "FlavorPayload",
        "fault": "ExceptionPayload",
        "audit_period": "AuditPeriodPayload",
    }
    for key, inner in nested.items():
        if key in data and data[key] is not None:
            check_object(data[key], inner, f"{where}.{key}")
    for item in data.get("ip_addresses", ()):
        check_object(item, "IpPayload", f"{where}.ip_addresses")
    for item in data.get("block_devices", ()):
        check_object(item, "BlockDevicePayload", f"{where}.block_devices")


def check(note: dict[str, Any]) -> str:
    """One message as oslo.messaging's Notifier builds it, around Nova's payload."""
    event = note["event_type"]
    assert event in EVENTS, f"an event Nova's samples do not have: {event}"
    name, priority = EVENTS[event]
    assert note["priority"] == priority, (event, note["priority"])
    assert note["publisher_id"].startswith("nova-compute:")
    assert uuidlib.UUID(note["message_id"])
    assert TIMESTAMP.fullmatch(note["timestamp"]), note["timestamp"]
    check_object(note["payload"], name, event)
    return event


# What the scenario below sends, in order: INFO on one topic, ERROR on the other.
INFO_EVENTS = [
    "instance.create.start",
    "instance.create.end",
    "instance.resize_prep.start",
    "instance.resize_prep.end",
    "instance.resize.start",
    "instance.resize.end",
    "instance.resize_finish.start",
    "instance.resize_finish.end",
    "instance.resize_confirm.start",
    "instance.resize_confirm.end",
    "instance.resize_prep.start",
    "instance.resize_prep.end",
    "instance.resize.start",
    "instance.resize.end",
    "instance.resize_finish.start",
    "instance.resize_finish.end",
    "instance.exists",
    "instance.resize_revert.start",
    "instance.resize_revert.end",
    "instance.resize_prep.start",
    "instance.resize_prep.end",
    "instance.resize.start",
    "instance.resize.end",
    "instance.resize_finish.start",
    "instance.resize_finish.end",
    "instance.resize_confirm.start",
]
ERROR_EVENTS = ["instance.resize_confirm.error", "compute.exception"]


def drive(rf: Stack, project: str) -> str:
    """Boot; resize and confirm; resize and revert; resize and fail the confirm."""
    uuid = rf.boot(project)
    ctx = rf.ctx(project)

    mig = rf.api.resize(ctx, uuid, "2")
    rf.wait_instance(uuid, VmState.RESIZED)
    rf.api.confirm_resize(ctx, uuid)
    rf.wait_migration(mig, MigrationStatus.CONFIRMED)
    rf.wait_instance(uuid, VmState.ACTIVE)

    mig = rf.api.resize(ctx, uuid, "3")
    rf.wait_instance(uuid, VmState.RESIZED)
    rf.api.revert_resize(ctx, uuid)
    rf.wait_migration(mig, MigrationStatus.REVERTED)
    rf.wait_instance(uuid, VmState.ACTIVE)

    mig = rf.api.resize(ctx, uuid, "3")
    rf.wait_instance(uuid, VmState.RESIZED)
    rf.set_failpoints(
        {"resizeflow.confirm.confirm_migration": [{"mode": "fatal", "instance_uuid": uuid}]}
    )
    rf.api.confirm_resize(ctx, uuid)
    rf.wait_migration(mig, MigrationStatus.ERROR)
    wait_for(lambda: rf.instance(uuid).vm_state == VmState.ERROR, 30, "the error-out")
    return uuid


def ours(uuid: str, note: dict[str, Any]) -> bool:
    """An instance notification of ``uuid``, or an exception (which names no instance)."""
    return bool(note["payload"]["nova_object.data"].get("uuid", uuid) == uuid)


def nic(rf: Stack, uuid: str) -> tuple[str, str, str, str]:
    """The server's one port: its id, MAC, fixed IP and its network's name."""
    with rf.db.snapshot() as s:
        [row] = s.execute(
            select(Port.id, Port.mac_address, Port.ip_address, Network.name)
            .join(Network, Network.id == Port.network_id)
            .where(Port.instance_uuid == uuid)
        ).all()
    port_id, mac, ip, label = row
    assert ip is not None
    return port_id, mac, ip, label


def check_content(
    by_event: dict[str, dict[str, Any]], project: str, port: tuple[str, str, str, str]
) -> None:
    prep = by_event["instance.resize_prep.start"]
    assert (prep["task_state"], prep["new_flavor"]["nova_object.data"]["name"]) == (
        "resize_prep",
        "m1.medium",
    )
    assert by_event["instance.resize_revert.start"]["task_state"] == "resize_reverting"
    error = by_event["instance.resize_confirm.error"]
    assert "injected fatal failure" in error["fault"]["nova_object.data"]["exception_message"]
    exc = by_event["compute.exception"]
    assert exc["exception"] == "StepFailed" and exc["traceback"].startswith("Traceback")
    # Who asked: the confirm's action, by the project's user.
    assert (error["action_initiator_user"], error["action_initiator_project"]) == (
        "alice",
        project,
    )
    assert error["request_id"].startswith("req-")
    # The NIC as Nova's network model has it: the port's fixed IPv4 address on its network.
    [ip] = by_event["instance.resize.start"]["ip_addresses"]
    data = ip["nova_object.data"]
    port_id, mac, address, label = port
    assert (data["port_uuid"], data["mac"], data["address"]) == (port_id, mac, address)
    assert (data["version"], data["label"]) == (4, label) and label == "private"


# The shapes do not depend on the database: one stack per broker is enough. On Redis
# they are read with kombu.
@pytest.mark.stacks("sqlite-redis")
def test_payloads_have_the_shape_of_novas_samples(rf: Stack, project: str) -> None:
    """A kombu consumer of Nova's queues, ``versioned_notifications.info`` and
    ``.error`` bound to exchange ``nova``, reads every message in its
    oslo.messaging envelope (oslo.messaging has no Redis driver)."""
    rf.notifications()  # what earlier tests left
    drain(rf, "error")
    uuid = drive(rf, project)

    def drained() -> list[dict[str, Any]] | None:
        errors.extend(drain(rf, "error"))
        return errors if any(n["event_type"] == "compute.exception" for n in errors) else None

    errors: list[dict[str, Any]] = []
    wait_for(drained, 30, "the error's notifications")
    infos = [n for n in rf.notifications() if ours(uuid, n)]
    errors = [n for n in errors if ours(uuid, n)]
    assert [check(n) for n in infos] == INFO_EVENTS
    assert [check(n) for n in errors] == ERROR_EVENTS
    mine = infos + errors
    # The request's context rides beside the payload, as oslo.messaging packs it,
    # with the id its listener drops duplicates by.
    for note in mine:
        assert re.fullmatch(r"[0-9a-f]{32}", note["_unique_id"])
        data = note["payload"]["nova_object.data"]
        if "request_id" in data:
            assert note["_context_request_id"] == data["request_id"]
            assert note["_context_user_id"] == data["action_initiator_user"]
            assert note["_context_project_id"] == data["action_initiator_project"] == project
        else:
            assert not [k for k in note if k.startswith("_context_")]
    by_event = {n["event_type"]: n["payload"]["nova_object.data"] for n in mine}
    check_content(by_event, project, nic(rf, uuid))


Received = tuple[str, dict[str, Any], str, str, Any, dict[str, Any]]


def recorder() -> Any:
    """A notification endpoint, as a Nova consumer writes one, that keeps what it
    received in order: (priority, ctxt, publisher_id, event_type, payload, metadata)."""
    # NOTE: imported here, not at the top: oslo.messaging brings eventlet with
    # it, which no other test process needs to load.
    import oslo_messaging

    class Recorder:
        filter_rule = oslo_messaging.NotificationFilter(publisher_id=r"^nova-compute:")

        def __init__(self) -> None:
            self.received: list[Received] = []

        def info(
            self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, md: Any
        ) -> None:
            self.received.append(("info", ctxt, publisher_id, event_type, payload, md))

        def error(
            self, ctxt: Any, publisher_id: str, event_type: str, payload: Any, md: Any
        ) -> None:
            self.received.append(("error", ctxt, publisher_id, event_type, payload, md))

    return Recorder()


# oslo.messaging's listener is run on the sqlite + rabbitmq stack.
@pytest.mark.stacks("sqlite-rabbitmq")
def test_an_oslo_messaging_listener_receives_them_as_novas(rf: Stack, project: str) -> None:
    """oslo.messaging's notification listener, set up as Nova's consumers set it
    up (control_exchange ``nova``, topic ``versioned_notifications``), receives
    every notification of a real resize, confirm, revert and error-out."""
    import oslo_messaging
    from oslo_config import cfg

    rf.notifications()  # what earlier tests left
    drain(rf, "error")
    # The stack's vhost, through oslo.messaging's rabbit driver.
    url = "rabbit://" + rf.settings.broker_url.split("://", 1)[1]
    conf = cfg.ConfigOpts()
    conf([], project="resizeflow-test")
    oslo_messaging.set_transport_defaults(control_exchange="nova")  # as nova/config.py does
    transport = oslo_messaging.get_notification_transport(conf, url=url)
    endpoint = recorder()
    listener = oslo_messaging.get_notification_listener(
        transport,
        [oslo_messaging.Target(topic="versioned_notifications")],
        [endpoint],
        executor="threading",
    )
    listener.start(override_pool_size=1)  # one at a time: the order they arrive in
    try:
        uuid = drive(rf, project)

        def got_all() -> bool:
            mine = [r for r in endpoint.received if ours(uuid, {"payload": r[4]})]
            return len(mine) >= len(INFO_EVENTS) + len(ERROR_EVENTS)

        wait_for(got_all, 30, "the listener to receive every notification")
    finally:
        listener.stop()
        listener.wait()
        transport.cleanup()
        oslo_messaging.set_transport_defaults(control_exchange="openstack")
    mine = [r for r in endpoint.received if ours(uuid, {"payload": r[4]})]
    assert [r[3] for r in mine if r[0] == "info"] == INFO_EVENTS
    assert [r[3] for r in mine if r[0] == "error"] == ERROR_EVENTS
    for priority, ctxt, publisher_id, event_type, payload, metadata in mine:
        check(
            {
                "event_type": event_type,
                "priority": priority.upper(),
                "publisher_id": publisher_id,
                "payload": payload,
                **metadata,  # message_id and timestamp
            }
        )
        data = payload["nova_object.data"]
        if "request_id" in data:
            assert (ctxt["request_id"], ctxt["user_id"], ctxt["project_id"]) == (
                data["request_id"],
                "alice",
                project,
            )
    check_content({r[3]: r[4]["nova_object.data"] for r in mine}, project, nic(rf, uuid))
