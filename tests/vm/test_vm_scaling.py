"""Two worker processes consume one host's queue: with qemu:///system the daemon holds the state."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections import defaultdict

from resizeflow.states import JournalStatus
from tests.vm.helpers import BIG, VmStack

SERVERS = 3


SECOND = "worker-vm2-second"


def test_two_workers_for_one_host_under_load(vm: VmStack) -> None:
    project = f"p-{uuid.uuid4().hex[:8]}"
    # A second process for vm2: it takes the next free slot of the host's node names.
    vm.stack.local.start_worker("vm2", name=SECOND, timeout=90, env=vm.worker_env("vm2"))
    try:
        sids = [vm.boot(project, "vm1") for _ in range(SERVERS)]
        for sid in sids:
            vm.wait_status(sid, "ACTIVE", timeout=240)
        for sid in sids:
            vm.action(sid, {"resize": {"flavorRef": BIG["id"]}})
        for sid in sids:
            vm.wait_status(sid, "VERIFY_RESIZE", timeout=240)
        for sid in sids:
            vm.action(sid, {"confirmResize": None})
        for sid in sids:
            vm.wait_status(sid, "ACTIVE", timeout=120)
            assert vm.domain_state("vm2", sid) == "running"
            assert vm.domain_state("vm1", sid) is None
    finally:
        vm.stack.local.stop_worker("vm2", name=SECOND)

    rows = [r for sid in sids for m in vm.migration_ids(sid) for r in vm.stack.journal(m)]
    # Every step of every workflow ran to completion exactly once.
    assert rows and all(r.status == JournalStatus.DONE and r.applied == 1 for r in rows)
    # Both workers of vm2 did some of its steps.
    workers = {r.worker.split("/")[0] for r in rows if r.host == "vm2" and r.worker}
    assert len(workers) == 2, workers
    # No two steps of one instance overlapped in time.
    # (Each server here has one migration, whose journal holds its resize and confirm steps.)
    by_instance: dict[int, list[tuple[dt.datetime, dt.datetime]]] = defaultdict(list)
    for r in rows:
        assert r.started_at is not None and r.finished_at is not None
        by_instance[r.migration_id].append((r.started_at, r.finished_at))
    for spans in by_instance.values():
        spans.sort()
        for (_, end), (begin, _) in itertools.pairwise(spans):
            assert end <= begin, spans

    for sid in sids:
        vm.delete(sid)
    for sid in sids:
        vm.wait_gone(sid)
