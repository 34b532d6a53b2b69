"""A fast flow test: boot, same-host resize and confirm through an in-process worker.

The worker runs in a thread of this process (celery.contrib.testing), on a real
Redis broker under a key prefix of its own, a real SQLite file and the libvirt
test driver with a private node.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import _state as celery_state
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select

from resizeflow import routing
from resizeflow.compute.policy import RequestContext
from resizeflow.db.models import Allocation, ComputeNode
from resizeflow.devstack.stack import build
from resizeflow.states import MigrationStatus, PowerState, VmState
from resizeflow.steps import context
from resizeflow.worker import build_runtime, register_node
from tests.support.invariants import assert_allocation_invariant
from tests.support.stack import REDIS_URL, Stack, require

HOST = "solo1"
NODE_XML = """<node><cpu><mhz>2000</mhz><model>x</model>
<topology sockets='1' cores='2' threads='2'/><active>4</active><total>4</total></cpu>
<memory>8388608</memory></node>
"""


@pytest.fixture
def solo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, context.HostRuntime]]:
    require(REDIS_URL, 6379, "Redis")
    # make_app and start_worker make this app the current and default one: undo that after.
    monkeypatch.setattr(celery_state, "default_app", celery_state.default_app)
    monkeypatch.setattr(celery_state._tls, "current_app", celery_state._tls.current_app)
    (tmp_path / "node.xml").write_text(NODE_XML)
    local = build(
        tmp_path / "state",
        broker=REDIS_URL,
        broker_prefix=f"rf-inproc-{uuid.uuid4().hex[:10]}:",
        env={
            "RESIZEFLOW_LIBVIRT_URI": f"test://{tmp_path / 'node.xml'}",
            "RESIZEFLOW_HOST": HOST,
            "RESIZEFLOW_NODE_VCPUS": "16",
            "RESIZEFLOW_NODE_MEMORY_MB": "65536",
            "RESIZEFLOW_NODE_LOCAL_GB": "1000",
            "RESIZEFLOW_NOTIFICATIONS": "false",
            "RESIZEFLOW_RETRY_BACKOFF": "0.05",
            "RESIZEFLOW_RETRY_BACKOFF_MAX": "0.2",
        },
    )
    runtime = build_runtime(local.settings, local.app)
    try:
        register_node(local.settings, runtime.db, runtime.virt)
        monkeypatch.setattr(context, "_runtime", None)  # restored to None afterwards
        context.install(runtime)
        with start_worker(
            local.app,
            pool="solo",
            perform_ping_check=False,
            queues=[routing.queue_for(HOST)],
            hostname=f"{HOST}@inprocess",
            shutdown_timeout=30,
        ):
            yield Stack(local, "sqlite", (HOST,)), runtime
    finally:
        runtime.db.dispose()
        local.close()


def test_same_host_resize_and_confirm(solo: tuple[Stack, context.HostRuntime]) -> None:
    rf, runtime = solo
    admin = RequestContext.admin()
    uid = rf.api.create(admin, name="vm", flavor_ref="1", host=HOST)
    rf.wait_instance(uid, VmState.ACTIVE)

    mig_id = rf.api.resize(admin, uid, "2", host=HOST)
    mig = rf.wait_migration(mig_id, MigrationStatus.FINISHED)
    assert (mig.source_compute, mig.dest_compute) == (HOST, HOST)
    resized = rf.wait_instance(uid, VmState.RESIZED)
    assert resized.old_flavor is not None
    assert resized.old_flavor["name"] == "m1.tiny"
    assert rf.instance_dir(HOST, uid, "_resize").is_dir()

    assert rf.api.confirm_resize(admin, uid) == mig_id
    rf.wait_migration(mig_id, MigrationStatus.CONFIRMED)
    inst = rf.wait_instance(uid, VmState.ACTIVE)

    assert (inst.host, inst.flavor["name"], inst.power_state) == (
        HOST,
        "m1.small",
        PowerState.RUNNING,
    )
    assert (inst.old_flavor, inst.new_flavor) == (None, None)
    assert "old_vm_state" not in inst.system_metadata
    assert all(row.status == "done" for row in rf.journal(mig_id))

    domains = {d.uuid: d for d in runtime.virt.list_domains()}
    assert uid in domains
    assert (domains[uid].power_state, domains[uid].vcpus) == (PowerState.RUNNING, 1)
    assert domains[uid].memory_mb == 2048
    assert rf.instance_dir(HOST, uid).is_dir()
    assert not rf.instance_dir(HOST, uid, "_resize").exists()

    assert_allocation_invariant(rf.db)
    with rf.db.transaction() as s:
        node = s.scalars(select(ComputeNode).where(ComputeNode.host == HOST)).one()
        assert (node.vcpus_used, node.memory_mb_used, node.local_gb_used) == (1, 2048, 20)
        consumers = set(s.scalars(select(Allocation.consumer_uuid)))
    assert consumers == {uid}


def test_same_host_resize_and_revert(solo: tuple[Stack, context.HostRuntime]) -> None:
    rf, runtime = solo
    admin = RequestContext.admin()
    uid = rf.api.create(admin, name="vm", flavor_ref="1", host=HOST)
    rf.wait_instance(uid, VmState.ACTIVE)
    mig_id = rf.api.resize(admin, uid, "2", host=HOST)
    rf.wait_migration(mig_id, MigrationStatus.FINISHED)

    assert rf.api.revert_resize(admin, uid) == mig_id
    rf.wait_migration(mig_id, MigrationStatus.REVERTED)
    inst = rf.wait_instance(uid, VmState.ACTIVE)

    assert (inst.host, inst.flavor["name"], inst.power_state) == (
        HOST,
        "m1.tiny",
        PowerState.RUNNING,
    )
    domains = {d.uuid: d for d in runtime.virt.list_domains()}
    assert (domains[uid].power_state, domains[uid].memory_mb) == (PowerState.RUNNING, 512)
    assert not rf.instance_dir(HOST, uid, "_resize").exists()
    assert_allocation_invariant(rf.db)
    with rf.db.transaction() as s:
        node = s.scalars(select(ComputeNode).where(ComputeNode.host == HOST)).one()
        assert (node.vcpus_used, node.memory_mb_used, node.local_gb_used) == (1, 512, 1)
