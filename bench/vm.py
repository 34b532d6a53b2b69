"""``resizeflow bench --hypervisor qemu``: real resizes of a guest with 1 GiB of data.

Two hosts that share nothing run on this machine (:mod:`resizeflow.devstack.hosts`:
each its own sshd on its own loopback address and its own instances dir), on
one libvirtd, with real TCG or KVM guests. One guest gets 1 GiB of random data
on its ephemeral disk, then:

1. ``rsync`` of that disk file to the other host, over the same SSH (same key,
   port and options as the workers): the baseline;
2. resize to the other host, then confirm;
3. resize back, then revert;
4. the baseline again, the other way.

Each workflow's time, from its requests to its last step's end in the
journal, is split into copy, shutdown, boot, the rest of the virt driver's
work, and the engine (everything else: queues, database, the runner), from
the instrumented workers' figures (:mod:`bench.vmprobe`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from resizeflow.compute.flavors import FlavorAdmin
from resizeflow.compute.policy import RequestContext
from resizeflow.conf import Settings
from resizeflow.db.models import Instance, StepJournal
from resizeflow.devstack import guest, hosts, libvirtd, qemu_demo
from resizeflow.devstack.stack import LocalStack, build
from resizeflow.states import VmState
from resizeflow.virt.remotefs import argv as remote_argv

GiB = 1024**3
MiB = 1024**2
HOSTS = ("vm1", "vm2")
# The data goes on a 2 GiB ephemeral disk; both flavors keep its size.
FLAVORS = (
    ("rfb-eph", 1, 128, 1, 2),
    ("rfb-eph-big", 2, 160, 1, 2),
)
WAIT = 600.0


@dataclass
class Split:
    """One workflow's time, in seconds, and what its copy moved."""

    flow: str
    total: float
    copy: float
    shutdown: float
    boot: float
    other_driver: float
    engine: float
    copy_bytes: int

    @property
    def copy_mb_s(self) -> float:
        return self.copy_bytes / MiB / self.copy if self.copy else 0.0

    @property
    def engine_share(self) -> float:
        return self.engine / self.total if self.total else 0.0


def run_vm_bench(
    console: Console, *, pg_admin_url: str, results_dir: Path, data_mib: int = 1024, keep: bool
) -> dict[str, Any]:
    """Run the real-VM bench; print its table; return the figures (also written as JSON)."""
    _require()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Path(tempfile.mkdtemp(prefix="resizeflow-bench-vm-"))
    t0 = time.monotonic()

    def log(msg: str) -> None:
        console.log(f"[{time.monotonic() - t0:5.0f}s] {msg}")

    libvirtd.ensure_running()
    files = guest.build(qemu_demo.GUEST_DIR)
    ssh_hosts = hosts.start_hosts(root / "hosts", HOSTS)
    local: LocalStack | None = None
    run = uuidlib.uuid4().hex[:4]
    net_env = qemu_demo.host_env(list(HOSTS), prefix=f"r{run}")
    try:
        local = _stack(root, files, ssh_hosts, pg_admin_url, run, net_env)
        log("stack up: two hosts, each with its own sshd and instances dir")
        bench = _Bench(local, ssh_hosts, root, log)
        results = bench.run(data_mib * MiB)
    finally:
        if local is not None:
            qemu_demo.cleanup(local.settings, local.db, net_env)
            local.close()
        ssh_hosts.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    results["stamp"] = stamp
    results["seconds"] = round(time.monotonic() - t0, 1)
    _print(console, results)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{stamp}-vm.json"
    path.write_text(json.dumps(results, indent=1))
    console.print(f"results: {path}")
    return results


def _require() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench --hypervisor qemu needs root: libvirtd, bridges, taps, sshd")
    missing = hosts.missing_tools()
    missing += [t for t in ("libvirtd", "qemu-system-x86_64") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: make hosts-deps vm-deps")


def _stack(
    root: Path,
    files: guest.GuestFiles,
    ssh_hosts: hosts.Hosts,
    pg_admin_url: str,
    run: str,
    net_env: dict[str, dict[str, str]],
) -> LocalStack:
    state = root / "stack"
    env = {
        "RESIZEFLOW_LIBVIRT_URI": "qemu:///system",
        # By name: the guest is uploaded through the stack's image API below.
        "RESIZEFLOW_DEFAULT_IMAGE": qemu_demo.GUEST_IMAGE,
        "RESIZEFLOW_INSTANCE_NAME_TEMPLATE": f"rfb{run}-{{host}}-{{uuid}}",
        "RESIZEFLOW_SHUTDOWN_TIMEOUT": "30",
        "RESIZEFLOW_SHUTDOWN_RETRY_INTERVAL": "2",
        "RESIZEFLOW_LOG_FORMAT": "text",
        **{
            k: v
            for k, v in ssh_hosts.env(ssh_hosts.hosts[0]).items()
            if k not in ("RESIZEFLOW_HOST", "RESIZEFLOW_MIGRATION_ADDRESS")
        },
    }
    local = build(state, pg_admin_url=pg_admin_url, env=env)
    try:
        guest.upload(f"{local.start_api()}/image", files, qemu_demo.GUEST_IMAGE)
        names = [
            local.spawn_worker(
                h.name,
                argv=[sys.executable, "-m", "bench.vmprobe", h.name, str(root / f"{h.name}.jsonl")],
                # Its own address, and its own bridges and tunnel endpoint.
                env={"RESIZEFLOW_MIGRATION_ADDRESS": h.address, **net_env[h.name]},
            )
            for h in ssh_hosts.hosts
        ]
        local.wait_workers(names, timeout=180)
        admin = FlavorAdmin(local.db)
        for fid, vcpus, ram, disk, eph in FLAVORS:
            admin.create(
                RequestContext.admin(),
                name=fid,
                ram=ram,
                vcpus=vcpus,
                disk=disk,
                flavorid=fid,
                ephemeral=eph,
            )
    except BaseException:
        local.close()
        raise
    return local


class _Bench:
    def __init__(
        self, local: LocalStack, ssh_hosts: hosts.Hosts, root: Path, log: Callable[[str], None]
    ) -> None:
        self.local, self.hosts, self.root, self.log = local, ssh_hosts, root, log
        self.api, self.caller = local.api, RequestContext.admin()

    def run(self, data: int) -> dict[str, Any]:
        uuid = self.api.create(self.caller, name="bench-vm", flavor_ref=FLAVORS[0][0], host="vm1")
        self._wait(uuid, VmState.ACTIVE)
        marker = self._marker("vm1", uuid, 1)
        self.api.stop(self.caller, uuid)
        self._wait(uuid, VmState.STOPPED)
        disk = self._inst_dir("vm1", uuid) / "disk.local"
        _write_random(disk, data, self.root / "data.bin")
        self.api.start(self.caller, uuid)
        self._wait(uuid, VmState.ACTIVE)
        self.log(f"guest up on vm1 with {data // MiB} MiB of random data on disk.local")

        baseline = [self._rsync(disk, "vm2")]
        self.log(f"rsync baseline vm1 -> vm2: {baseline[0]['mb_s']:.1f} MB/s")
        splits = [self._workflow(uuid, FLAVORS[1][0], "confirm", marker)]
        self.log(_line(splits[-1]))
        splits.append(self._workflow(uuid, FLAVORS[0][0], "revert", marker))
        self.log(_line(splits[-1]))
        disk = self._inst_dir("vm2", uuid) / "disk.local"
        baseline.append(self._rsync(disk, "vm1"))
        self.log(f"rsync baseline vm2 -> vm1: {baseline[1]['mb_s']:.1f} MB/s")
        self.api.delete(self.caller, uuid)
        rsync_mb_s = sum(b["mb_s"] for b in baseline) / len(baseline)
        return {
            "data_bytes": data,
            "virt_type": _virt_type(self._inst_dir("vm2", uuid)),
            "rsync": baseline,
            "rsync_mb_s": rsync_mb_s,
            "workflows": [
                asdict(s) | {"copy_mb_s": s.copy_mb_s, "copy_vs_rsync": s.copy_mb_s / rsync_mb_s}
                for s in splits
            ],
        }

    # -- one workflow -------------------------------------------------------
    def _workflow(self, uuid: str, flavor: str, end: str, marker: str) -> Split:
        inst = self._instance(uuid)
        source = inst.host
        assert source is not None
        dest = next(h for h in HOSTS if h != source)
        t_resize = _now()
        mig_id = self.api.resize(self.caller, uuid, flavor)
        self._wait(uuid, VmState.RESIZED)
        resize_end = self._flow_end(mig_id, "resize")
        if self._marker(dest, uuid, 1) != marker:
            raise RuntimeError(f"the guest lost its marker in the resize to {dest}")
        t_end = _now()
        if end == "confirm":
            self.api.confirm_resize(self.caller, uuid)
        else:
            self.api.revert_resize(self.caller, uuid)
        self._wait(uuid, VmState.ACTIVE)
        end_at = self._flow_end(mig_id, end)
        total = (resize_end - t_resize).total_seconds() + (end_at - t_end).total_seconds()
        parts = self._probe(mig_id)
        known = parts["copy"] + parts["shutdown"] + parts["boot"]
        return Split(
            flow=end,
            total=total,
            copy=parts["copy"],
            shutdown=parts["shutdown"],
            boot=parts["boot"],
            other_driver=max(parts["driver"] - known, 0.0),
            engine=total - max(parts["driver"], known),
            copy_bytes=int(parts["copy_bytes"]),
        )

    def _probe(self, mig_id: int) -> dict[str, float]:
        """The instrumented workers' figures for every task of this migration."""
        sums = {"copy": 0.0, "copy_bytes": 0.0, "shutdown": 0.0, "boot": 0.0, "driver": 0.0}
        for host in HOSTS:
            path = self.root / f"{host}.jsonl"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if row["key"] == mig_id:
                    for key in sums:
                        sums[key] += row[key]
        return sums

    def _flow_end(self, mig_id: int, flow: str) -> dt.datetime:
        """When the flow's last step finished, by the worker's clock (UTC, naive)."""
        with self.local.db.snapshot() as s:
            ends = list(
                s.scalars(
                    select(StepJournal.finished_at).where(
                        StepJournal.migration_id == mig_id, StepJournal.flow == flow
                    )
                )
            )
        if not ends or any(e is None for e in ends):
            raise RuntimeError(f"migration {mig_id}: the {flow} flow has unfinished steps")
        return max(e for e in ends if e is not None)

    # -- baseline -----------------------------------------------------------
    def _rsync(self, src: Path, to: str) -> dict[str, Any]:
        """rsync ``src`` to host ``to`` over the workers' SSH settings, timed."""
        target = next(h for h in self.hosts.hosts if h.name == to)
        settings = Settings.from_env(self.hosts.env(target))
        # The workers' key, port and host keys; its own connection, as a plain rsync has.
        opts = dataclasses.replace(remote_argv.ssh_options(settings), control_dir=None)
        scratch = PurePosixPath(target.root / "rsync-baseline" / src.name)
        Path(scratch).parent.mkdir(parents=True, exist_ok=True)
        Path(scratch).unlink(missing_ok=True)
        argv = remote_argv.rsync_argv(opts, src, target.remote, scratch)
        started = time.monotonic()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        took = time.monotonic() - started
        if proc.returncode != 0:
            raise RuntimeError(f"rsync baseline failed: {proc.stderr.strip()[-400:]}")
        sent = remote_argv.rsync_stats(proc.stdout)[0]
        Path(scratch).unlink(missing_ok=True)
        return {"to": to, "bytes": sent, "seconds": took, "mb_s": sent / MiB / took}

    # -- the stack ----------------------------------------------------------
    def _inst_dir(self, host: str, uuid: str) -> Path:
        return self.local.settings.instances_dir(host) / uuid

    def _instance(self, uuid: str) -> Instance:
        with self.local.db.snapshot() as s:
            inst = s.get(Instance, uuid)
            assert inst is not None
            return inst

    def _wait(self, uuid: str, vm_state: VmState) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            inst = self._instance(uuid)
            if inst.vm_state == VmState.ERROR:
                raise RuntimeError(f"server {uuid} went to ERROR")
            if inst.vm_state == vm_state and inst.task_state is None:
                return
            time.sleep(0.2)
        raise RuntimeError(f"server {uuid} did not become {vm_state.value} in {WAIT:.0f}s")

    def _marker(self, host: str, uuid: str, boots: int) -> str:
        """The marker the guest printed in its last boot on ``host`` (waits for ``boots``)."""
        console = self._inst_dir(host, uuid) / "console.log"
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            text = console.read_text(errors="replace") if console.exists() else ""
            reports = guest.parse_console(text)
            if len(reports) >= boots:
                return reports[-1].marker
            time.sleep(0.5)
        raise RuntimeError(f"the guest on {host} printed no report in {WAIT:.0f}s")


def _write_random(disk: Path, size: int, scratch: Path) -> None:
    """``size`` bytes of random data into the qcow2 ``disk`` from offset 0."""
    with scratch.open("wb") as out:
        for _ in range(size // (4 * MiB)):
            out.write(os.urandom(4 * MiB))
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", f"write -q -s {scratch} 0 {size}", str(disk)],
        check=True,
        capture_output=True,
    )
    scratch.unlink()


def _virt_type(inst_dir: Path) -> str:
    xml = inst_dir / "libvirt.xml"
    if not xml.exists():
        return "?"
    text = xml.read_text()
    return "kvm" if "type='kvm'" in text or 'type="kvm"' in text else "qemu (TCG)"


def _now() -> dt.datetime:
    # The journal stores naive UTC (see resizeflow.db.models.utcnow).
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _line(s: Split) -> str:
    return (
        f"resize+{s.flow}: {s.total:.1f}s = copy {s.copy:.1f} + shutdown {s.shutdown:.1f}"
        f" + boot {s.boot:.1f} + other driver {s.other_driver:.1f} + engine {s.engine:.2f}"
        f" ({s.engine_share:.1%}); copy {s.copy_mb_s:.1f} MB/s"
    )


def _print(console: Console, results: dict[str, Any]) -> None:
    table = Table(
        title=f"real resizes, {results['data_bytes'] // MiB} MiB of data, "
        f"{results['virt_type']} (seconds)"
    )
    heads = ("flow", "total", "copy", "shutdown", "boot", "driver", "engine", "engine %",
             "copy MB/s", "rsync MB/s", "÷ rsync")  # fmt: skip
    for col in heads:
        table.add_column(col, justify="right")
    for w in results["workflows"]:
        table.add_row(
            f"resize+{w['flow']}",
            f"{w['total']:.1f}",
            f"{w['copy']:.1f}",
            f"{w['shutdown']:.1f}",
            f"{w['boot']:.1f}",
            f"{w['other_driver']:.1f}",
            f"{w['engine']:.2f}",
            f"{w['engine'] / w['total']:.1%}",
            f"{w['copy_mb_s']:.1f}",
            f"{results['rsync_mb_s']:.1f}",
            f"{w['copy_vs_rsync']:.2f}x",
        )
    console.print(table)
    worst_copy = min(w["copy_vs_rsync"] for w in results["workflows"])
    worst_engine = max(w["engine"] / w["total"] for w in results["workflows"])
    console.print(
        f"targets: copy >= 0.9x rsync: {worst_copy:.2f}x "
        f"({'met' if worst_copy >= 0.9 else 'not met'}); engine <= 5% of the total: "
        f"{worst_engine:.1%} ({'met' if worst_engine <= 0.05 else 'not met'})"
    )
