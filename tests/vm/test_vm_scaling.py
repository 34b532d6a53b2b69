"""Two worker processes consume one host's queue: with qemu:///system the daemon holds the state."""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
import uuid
from collections import defaultdict

from celery import Celery

from resizeflow.db import journal
from tests.stack import wait_for
from tests.vm.helpers import BIG, VmStack

SERVERS = 3


def _start_second_worker(vm: VmStack, host: str) -> tuple[subprocess.Popen[bytes], Celery]:
    env = {**vm.stack.env, "RESIZEFLOW_WORKER_NAME": "second"}
    log = open(vm.stack.state_dir / f"worker-{host}-second.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "resizeflow", "worker", "--host", host],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    node = f"{host}@second"
    wait_for(
        lambda: proc.poll() is None and vm.stack.app.control.ping(destination=[node], timeout=0.5),
        timeout=90,
        what="the second worker to answer a ping",
    )
    return proc, vm.stack.app


def test_two_workers_for_one_host_under_load(vm: VmStack) -> None:
    project = f"p-{uuid.uuid4().hex[:8]}"
    second, _ = _start_second_worker(vm, "vm2")
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
        second.terminate()
        second.wait(timeout=60)

    rows = [r for sid in sids for m in _migration_ids(vm, sid) for r in vm.stack.journal(m)]
    # Every step of every workflow ran to completion exactly once.
    assert rows and all(r.status == journal.DONE and r.applied == 1 for r in rows)
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


def _migration_ids(vm: VmStack, sid: str) -> list[int]:
    from sqlalchemy import select

    from resizeflow.db.models import Migration

    with vm.stack.db.snapshot() as s:
        return list(s.scalars(select(Migration.id).where(Migration.instance_uuid == sid)))
