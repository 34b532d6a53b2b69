"""The model-based run (tests/support/model.py) with real guests.

The same seeded driver as ``tests/chaos/test_model.py``, shorter, on the vm
tier's stack: QEMU guests on two hosts, disks copied over SSH, ports on real
bridges. Its faults are those a compute host suffers (a worker SIGKILLed, a
host's worker down for a while, transient and final step failures); the broker
and PostgreSQL are the session's, shared with the tier's other tests. Reset-state
is left out: it sets the database apart from what the hypervisor has, on
purpose, and the guests' checks below hold only where the engine moved them.

Beyond the model's invariants, what the guests say must hold:

- each guest's root disk keeps one marker from its first boot on: a report
  that a boot wrote a new one after another was seen is a lost disk;
- a server at rest has its domain on its host, running as the database says,
  and a running guest reports its flavor's vCPUs and its marker;
- a QEMU process runs only for a server running on its host, and after the
  run's servers are deleted none is left, nor a domain.

RESIZEFLOW_SOAK_SEED replays a run's choices.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from resizeflow.db.models import Instance
from resizeflow.states import PowerState, VmState
from tests.support.chaos import HOST_DOWN, SIGKILL, STEP_FAILURES
from tests.support.invariants import orphan_violations, usage_violations
from tests.support.model import ModelRun
from tests.support.stack import wait_for
from tests.vm.helpers import SMALL, VmStack

OPERATIONS = 30
SERVERS = 3
# How long a running guest has to report its current boot: a boot alone takes
# 5 to 10 s under TCG, longer while the other guests boot too.
REPORT_WAIT = 60.0
# SMALL's disks with two vCPUs: a resize between the two never shrinks a disk,
# and the guest's CPU count tells which flavor it booted with.
SMALL_2CPU = {**SMALL, "id": "rf-small-2cpu", "name": "rf.small.2cpu", "vcpus": 2}


class VmTarget:
    """The vm stack as a :class:`tests.support.model.Target`."""

    project = "vm-model"
    flavors = (str(SMALL["id"]), str(SMALL_2CPU["id"]))
    fault_kinds = (SIGKILL, HOST_DOWN, STEP_FAILURES)

    def __init__(self, vm: VmStack) -> None:
        self.vm = vm
        stack = vm.stack
        self.hosts: tuple[str, ...] = stack.hosts
        self.api, self.db, self.settings, self.app = stack.api, stack.db, stack.settings, stack.app
        # Each server's root disk marker, from the first report that named one.
        self.markers: dict[str, str] = {}
        self.disk_violations: list[str] = []
        # The running guests whose reports the last guest check read.
        self.guests_checked: set[str] = set()

    def start_worker(self, host: str) -> Any:
        return self.vm.stack.local.start_worker(host, timeout=90, env=self.vm.worker_env(host))

    def kill_worker(self, host: str) -> None:
        self.vm.stack.kill_worker(host)

    def domains(self, host: str) -> list[dict[str, Any]]:
        return list(self.vm.stack.domains(host).values())

    def set_failpoints(self, table: dict[str, list[dict[str, Any]]]) -> None:
        self.vm.stack.set_failpoints(table)

    def restart_broker_losing_data(self) -> None:
        raise AssertionError("the vm stack's broker is shared: not a fault of this run")

    def restart_postgres(self) -> None:
        raise AssertionError("the vm stack's database is shared: not a fault of this run")

    # -- what the guests say --------------------------------------------------
    def observe(self, uuid: str) -> None:
        """Read the guest's boot reports on every host: a boot that wrote a new
        marker after one was seen found its root disk replaced."""
        for host in self.hosts:
            for report in self.vm.reports(host, uuid):
                if not report.marker:
                    continue
                known = self.markers.setdefault(uuid, report.marker)
                if report.marker != known:
                    self.disk_violations.append(
                        f"{uuid} booted on {host} with marker {report.marker} "
                        f"({'written' if report.marker_written else 'found'}), "
                        f"its disk had {known}"
                    )

    def invariant_violations(self, servers: list[str]) -> list[str]:
        for uuid in servers:
            self.observe(uuid)
        domains = {h: self.domains(h) for h in self.hosts}
        return (
            usage_violations(self.db, servers)
            + orphan_violations(self.db, self.settings, domains, servers)
            + sorted(set(self.disk_violations))
            + self.guest_violations(servers)
            + self.process_violations(servers)
        )

    def guest_violations(self, servers: list[str]) -> list[str]:
        problems = []
        self.guests_checked = set()
        with self.db.snapshot() as s:
            rows = [
                (i.uuid, i.host, i.vm_state, i.power_state, int(i.flavor["vcpus"]))
                for i in s.scalars(select(Instance).where(Instance.uuid.in_(servers)))
                if not i.deleted and i.vm_state != VmState.ERROR and i.host
            ]
        for uuid, host, vm_state, power, vcpus in rows:
            want = "running" if power == PowerState.RUNNING else "shutoff"
            have = self.vm.domain_state(host, uuid)
            if have != want:
                problems.append(f"{uuid} ({vm_state.value}) on {host}: domain {have}, not {want}")
            elif want == "running":
                self.guests_checked.add(uuid)
                if not self._reports(host, uuid, vcpus):
                    last = self.vm.reports(host, uuid)[-1:]
                    problems.append(
                        f"{uuid} on {host}: the guest's last report {last} is not "
                        f"{vcpus} vCPUs with marker {self.markers.get(uuid)}"
                    )
        return problems

    def _reports(self, host: str, uuid: str, vcpus: int) -> bool:
        """Whether the guest's latest boot on ``host`` reports ``vcpus`` and its
        marker, given a boot's time to report (a reboot may have just begun)."""

        def right() -> bool:
            reports = self.vm.reports(host, uuid)
            if not reports:
                return False
            last = reports[-1]
            return last.nproc == vcpus and last.marker == self.markers.get(uuid, last.marker)

        try:
            wait_for(right, REPORT_WAIT, f"{uuid}'s report on {host}")
        except AssertionError:
            return False
        return True

    def qemu_processes(self) -> dict[str, list[str]]:
        """The hosts each server has a QEMU process on, by server, from the
        processes' command lines (``-name guest=<domain name>,...``)."""
        template = self.settings.instance_name_template
        pattern = "".join(
            {"{host}": "(?P<host>[^-]+)", "{uuid}": "(?P<uuid>[0-9a-f-]{36})"}.get(part)
            or re.escape(part)
            for part in re.split(r"(\{host\}|\{uuid\})", template)
        )
        found: dict[str, list[str]] = defaultdict(list)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                argv = cmdline.read_bytes().split(b"\0")
            except OSError:
                continue  # the process ended meanwhile
            if not argv or b"qemu-system" not in argv[0]:
                continue
            m = re.search(rf"guest={pattern}", b" ".join(argv).decode(errors="replace"))
            if m:
                found[m["uuid"]].append(m["host"])
        return found

    def process_violations(self, servers: list[str]) -> list[str]:
        with self.db.snapshot() as s:
            insts = {
                i.uuid: i for i in s.scalars(select(Instance).where(Instance.uuid.in_(servers)))
            }
        problems = []
        for uuid, hosts in self.qemu_processes().items():
            inst = insts.get(uuid)
            if inst is None:
                continue  # another test's server
            if inst.deleted:
                problems.append(f"QEMU of deleted {uuid} still runs on {hosts}")
            elif len(hosts) > 1:
                problems.append(f"{uuid} has QEMU processes on {hosts}")
            elif inst.vm_state != VmState.ERROR and (
                hosts != [inst.host] or inst.power_state != PowerState.RUNNING
            ):
                state = f"{inst.vm_state.value}, {inst.power_state.name} on {inst.host}"
                problems.append(f"{uuid} ({state}) has a QEMU process on {hosts}")
        return problems


@pytest.mark.timeout(1200)
def test_every_operation_under_faults_with_real_guests(vm: VmStack) -> None:
    vm.create_flavor(SMALL_2CPU)
    seed = (
        int(os.environ["RESIZEFLOW_SOAK_SEED"])
        if os.environ.get("RESIZEFLOW_SOAK_SEED")
        else random.SystemRandom().randrange(2**32)
    )
    target = VmTarget(vm)
    run = ModelRun(
        target,
        seed,
        OPERATIONS,
        SERVERS,
        pause=4.0,
        leave_out=frozenset({"reset_state"}),
    )
    try:
        figures = run.run()
    finally:
        target.set_failpoints({})
    print(f"vm: {figures.summary()}")
    assert not figures.violations, run.failure_report()
    assert sum(figures.accepted.values()) > sum(figures.operations.values()) // 4, figures.summary()
    assert sum(figures.faults.values()) > 0, figures.summary()

    # The stack still serves after the run: each server not in ERROR is started
    # if stopped, resized to its other flavor and confirmed, and its guest must
    # then report that flavor's vCPUs and its marker.
    survivors = [u for u in run.live if vm.stack.instance(u).vm_state != VmState.ERROR]
    if not survivors:  # every server failed: a new one must still boot and move
        survivors = [vm.boot(target.project, target.hosts[0])]
        run.live.append(survivors[0])
        run.booted.append(survivors[0])
    for uuid in survivors:
        if vm.show(uuid)["status"] == "SHUTOFF":
            vm.action(uuid, {"os-start": None})
        vm.wait_status(uuid, "ACTIVE")
        vm.action(uuid, {"resize": {"flavorRef": run.other_flavor(uuid)}})
        vm.wait_status(uuid, "VERIFY_RESIZE", timeout=240)
        vm.action(uuid, {"confirmResize": None})
        vm.wait_status(uuid, "ACTIVE")
        target.observe(uuid)
    problems = target.guest_violations(survivors) + target.disk_violations
    assert not problems, problems
    assert target.guests_checked == set(survivors), target.guests_checked
    # The process scan below sees guests: each survivor's QEMU, on its host.
    running = target.qemu_processes()
    hosts = {u: [vm.stack.instance(u).host] for u in survivors}
    assert {u: running.get(u) for u in survivors} == hosts, running

    # The end of the run's servers: no QEMU process, no domain, no directory left.
    for uuid in run.live:
        run.patiently(lambda u=uuid: target.api.delete(run.user(), u))
    for uuid in run.live:
        vm.wait_gone(uuid, timeout=180)
    booted = set(run.booted)
    time.sleep(1)
    left = {u: h for u, h in target.qemu_processes().items() if u in booted}
    assert not left, f"QEMU processes left after the servers were deleted: {left}"
    for host in target.hosts:
        defined = booted & set(vm.stack.domains(host))
        assert not defined, f"domains left on {host}: {defined}"
        dirs = [
            p.name for p in vm.stack.settings.instances_dir(host).glob("*") if p.name[:36] in booted
        ]
        assert not dirs, f"instance directories left on {host}: {dirs}"
