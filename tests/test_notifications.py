"""Every versioned notification the workers send has the shape of Nova's published samples.

Nova documents each notification with a sample (``doc/notification_samples``):
its event type, priority, and a payload object with a name, a version and a set
of fields, nesting other objects (the flavor, the IP addresses, the fault). The
tables below restate those shapes, field by field and version by version; the
test drives real workers through resize, confirm, revert and a failure, reads
what they published on the broker, and holds every payload to its table.
"""

from __future__ import annotations

from typing import Any

import pytest
from kombu import Connection

from resizeflow.drivers.notifier import notification_queue
from resizeflow.states import MigrationStatus, VmState
from tests.stack import Stack, wait_for

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
    "compute.exception": ("ExceptionPayload", "ERROR"),
}


def drain(rf: Stack, priority: str) -> list[dict[str, Any]]:
    """Drain ``notifications.<priority>`` (Nova routes ERROR notifications to their own queue)."""
    out: list[dict[str, Any]] = []
    with Connection(
        rf.settings.broker_url, transport_options=rf.app.conf.broker_transport_options
    ) as conn:
        queue = notification_queue(priority)(conn)
        queue.declare()
        while (msg := queue.get(no_ack=True)) is not None:
            out.append(msg.payload)
    return out


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
    event = note["event_type"]
    assert event in EVENTS, f"an event Nova's samples do not have: {event}"
    name, priority = EVENTS[event]
    assert note["priority"] == priority, (event, note["priority"])
    assert note["publisher_id"].startswith("nova-compute:")
    check_object(note["payload"], name, event)
    return event


@pytest.fixture
def one_stack(rf: Stack) -> Stack:
    # The shapes do not depend on the database or the broker: one stack is enough.
    if (rf.backend, rf.broker) != ("sqlite", "redis"):
        pytest.skip("the notification shapes are checked on the sqlite + redis stack")
    return rf


def test_payloads_have_the_shape_of_novas_samples(one_stack: Stack, project: str) -> None:
    rf = one_stack
    rf.notifications()  # what earlier tests left
    drain(rf, "error")
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

    def drained() -> list[dict[str, Any]] | None:
        errors.extend(drain(rf, "error"))
        return errors if any(n["event_type"] == "compute.exception" for n in errors) else None

    errors: list[dict[str, Any]] = []
    wait_for(drained, 30, "the error's notifications")
    notes = rf.notifications() + errors
    mine = [n for n in notes if n["payload"]["nova_object.data"].get("uuid", uuid) == uuid]
    events = [check(n) for n in mine]
    assert events == [
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
        "instance.resize_confirm.error",
        "compute.exception",
    ]
    by_event = {n["event_type"]: n["payload"]["nova_object.data"] for n in mine}
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
    ip = by_event["instance.resize.start"]["ip_addresses"][0]["nova_object.data"]
    assert ip["address"].startswith("fe80::") and ip["label"] == "private"
