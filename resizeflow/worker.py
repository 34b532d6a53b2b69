"""``resizeflow worker --host NAME``: the Celery worker processes of a compute host.

At start a worker process joins its host: it takes a slot, which makes its
Celery node name ``<host>-<slot>@<machine>``, unique per process. It then
registers its compute node and redefines its domains from the instance
directories, the way Nova's ``init_host`` recovers: the libvirt test driver
forgets everything when a process exits, and a real host may have rebooted.
Only then does it consume ``compute.<host>``. A host may run several worker
processes when its hypervisor keeps its state outside them (``qemu:///``);
on ``test:///`` a second one is refused.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict
from typing import Any

from celery import Celery
from celery.worker import state as worker_state
from celery.worker.control import inspect_command
from kombu.pidbox import Mailbox
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from resizeflow import errors, pools, recovery, routing, unacked
from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.db import journal, services
from resizeflow.db.models import ComputeNode, Instance, Migration
from resizeflow.db.session import Database
from resizeflow.openstack.notifier import KombuNotifier
from resizeflow.openstack.tunnels import record_endpoint, tunnel_peers
from resizeflow.restart import Restart
from resizeflow.states import MigrationStatus, PowerState
from resizeflow.steps import context
from resizeflow.storage.client import RemoteStorage
from resizeflow.virt.base import VirtDriver
from resizeflow.virt.libvirt import LibvirtDriver
from resizeflow.virt.remotefs import address as migration_address

log = logging.getLogger(__name__)


def register_node(settings: Settings, database: Database, virt: VirtDriver) -> ComputeNode:
    """Create or update this host's compute node; settings override the driver's inventory."""
    res = virt.node_resources()
    with database.transaction() as s:
        node = s.scalars(
            select(ComputeNode).where(ComputeNode.host == settings.host).with_for_update()
        ).first()
        if node is None:
            node = ComputeNode(host=settings.host, node=res.hypervisor_hostname)
            s.add(node)
        node.vcpus = settings.node_vcpus if settings.node_vcpus is not None else res.vcpus
        node.memory_mb = (
            settings.node_memory_mb if settings.node_memory_mb is not None else res.memory_mb
        )
        node.local_gb = (
            settings.node_local_gb if settings.node_local_gb is not None else res.local_gb
        )
        node.cpu_allocation_ratio = settings.cpu_allocation_ratio
        node.ram_allocation_ratio = settings.ram_allocation_ratio
        node.disk_allocation_ratio = settings.disk_allocation_ratio
        for col in ("vcpus_used", "memory_mb_used", "local_gb_used"):
            if getattr(node, col) is None:
                setattr(node, col, 0)
        s.flush()
        return node


def recover_domains(settings: Settings, database: Database, virt: VirtDriver) -> list[str]:
    """Redefine this host's domains and start those the database says are running."""
    with database.transaction() as s:
        running = {
            uuid: power == PowerState.RUNNING
            for uuid, power in s.execute(
                select(Instance.uuid, Instance.power_state).where(
                    Instance.host == settings.host, Instance.deleted.is_(False)
                )
            )
        }
        # The source copy of a resize awaiting confirmation stays shut off.
        for (uuid,) in s.execute(
            select(Migration.instance_uuid).where(
                Migration.source_compute == settings.host,
                Migration.dest_compute != settings.host,
                Migration.status == MigrationStatus.FINISHED,
            )
        ):
            running.setdefault(uuid, False)
        peers = tunnel_peers(s)
    return virt.recover(running, peers)


def join_host(settings: Settings, database: Database, *, register: bool) -> services.Joined:
    """Take this process's slot among the host's workers.

    Refuses a host that has no compute node yet unless ``register`` is given
    (a typo in a host name must not become a new, empty host the scheduler
    picks), and a second live worker of a host on the libvirt test driver.
    """
    for attempt in range(3):
        try:
            with database.transaction() as s:
                known = s.scalar(
                    select(ComputeNode.id).where(ComputeNode.host == settings.host).limit(1)
                )
                if known is None and not register:
                    raise errors.ComputeHostNotFound(
                        f"host {settings.host} is not registered; start its first worker with "
                        "--register to add it (see workers/README.md)"
                    )
                return services.join(
                    s,
                    settings.host,
                    routing.queue_for(settings.host),
                    machine=socket.gethostname(),
                    pid=os.getpid(),
                    down_time=settings.service_down_time,
                    exclusive=single_process_driver(settings.libvirt_uri),
                )
        except IntegrityError:
            # NOTE: two processes of a new host starting at once both create its
            # service row (or take one slot); the loser looks again, and then
            # sees the winner, which the row lock now serialises.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# The longest a worker's start waits to learn whether its migration address answers.
ADDRESS_PROBE_TIMEOUT = 5.0


def check_migration_address(settings: Settings) -> str | None:
    """Say in one WARNING line when other hosts could not copy disks to this one.

    Only with an SSH transport, and only this host's own advertised address:
    it does not resolve, nothing answers at it, or what answers is not an
    sshd. It never stops the worker (the address may come up later, and
    confirms and reverts that stay on their hosts need none). Peers are not
    checked here: they come and go, and a step that cannot reach its dest
    already names that host, its address and, for a name that does not
    resolve, the setting to change there. Returns the line, or None.
    """
    if settings.disk_transport == "local":
        return None
    address = settings.advertised_migration_address
    timeout = min(settings.ssh_connect_timeout, ADDRESS_PROBE_TIMEOUT)
    found = migration_address.probe_ssh(address, settings.ssh_port, timeout)
    if found is None:
        return None
    names = [
        f"{name} (unset: the host name)"
        if name == migration_address.MIGRATION_ADDRESS and not settings.migration_address
        else name
        for name in found.settings
    ]
    line = (
        f"host {settings.host}: other hosts cannot copy disks to this one over SSH "
        f"({settings.disk_transport}): {found.problem}; set {' or '.join(names)}, or "
        "RESIZEFLOW_REMOTE_FILESYSTEM_TRANSPORT=local if every host's instances dir "
        "is on this machine"
    )
    log.warning("%s", line)
    return line


def single_process_driver(uri: str) -> bool:
    """Whether the hypervisor's state lives inside the worker process (libvirt's test driver)."""
    return uri.startswith("test:")


def build_runtime(settings: Settings, app: Celery, node: str | None = None) -> context.HostRuntime:
    # NOTE: no pre-ping on checkout: it would cost every step a round trip.
    # A connection that died with its server fails the step's first statement
    # with a transient error, SQLAlchemy then drops the pool's stale
    # connections, and the step retries on a fresh one.
    database = Database(settings.db_url, pool_pre_ping=False)
    virt = LibvirtDriver.from_settings(settings)
    notifier = KombuNotifier(
        app.connection_for_write(),
        enabled=settings.notifications,
        durable=settings.notifications_durable,
    )
    return context.HostRuntime(
        settings=settings,
        db=database,
        virt=virt,
        notifier=notifier,
        storage=RemoteStorage(app, settings.storage_host, settings.host_call_timeout),
        incarnation=f"{node or nodename(settings)}/{os.getpid()}",
    )


@inspect_command()
def resizeflow_domains(state: Any) -> list[dict[str, Any]]:
    """Remote control: the libvirt domains this worker's host has defined."""
    return [
        {**asdict(d), "power_state": d.power_state.name}
        for d in context.current().virt.list_domains()
    ]


class Heartbeat(threading.Thread):
    """Reports the host's service as up every ``report_interval`` seconds.

    It also watches the worker's own consumer: it pings itself over the
    broker, and when the worker stops answering for several beats in a row
    (Celery's Redis consumer can stall after the server restarts under it) it
    asks the worker to stop, so that its supervisor (systemd, compose) starts
    a fresh one, which then re-drives its own steps.
    """

    MISSED_PINGS_BEFORE_RESTART = 3

    def __init__(self, runtime: context.HostRuntime, app: Celery | None = None) -> None:
        super().__init__(name="resizeflow-heartbeat", daemon=True)
        self.runtime, self.app = runtime, app
        self.settings, self.db, self.incarnation = runtime.settings, runtime.db, runtime.incarnation
        self.stopping = threading.Event()
        self.restart = Restart()
        self.missed = 0
        self.answered = False
        self.started = time.monotonic()
        self.startup_grace = max(60.0, 10 * self.settings.report_interval)
        # Celery's control mailbox, but without a producer pool (see consumer_alive).
        self.mailbox = (
            None
            if app is None
            else Mailbox(
                app.conf.control_exchange,
                type="fanout",
                accept=app.conf.accept_content,
                serializer=app.conf.task_serializer,
                reply_queue_ttl=app.conf.control_queue_ttl,
                reply_queue_expires=app.conf.control_queue_expires,
            )
        )

    @property
    def node(self) -> str:
        """This process's Celery node name (its incarnation, without the pid)."""
        return self.incarnation.rpartition("/")[0] or nodename(self.settings)

    def beat(self) -> None:
        with self.db.transaction() as s:
            services.heartbeat(
                s, self.settings.host, routing.queue_for(self.settings.host), node=self.node
            )
            journal.renew_leases(
                s, self.incarnation, self.runtime.executing_now(), self.settings.step_lease
            )

    def consumer_alive(self) -> bool:
        assert self.app is not None
        assert self.mailbox is not None
        # NOTE: a fresh connection for every ping. kombu pools connections and
        # producers per broker URL for the whole process, so the app's pools
        # are the worker's own too: a stale pooled connection after a broker
        # restart must not make the ping fail, and closing those pools would
        # leave the worker unable to publish anything ("Acquire on closed pool").
        try:
            with self.app.connection_for_write() as conn:
                bound: Any = self.mailbox(conn)  # kombu's stubs call this a Node; it is a Mailbox
                return bool(bound.call([self.node], "ping", timeout=2.0))
        except Exception:  # a broker that is down is also "no answer"
            return False

    def run(self) -> None:
        while not self.stopping.wait(self.settings.report_interval):
            try:
                self.beat()
            except Exception:  # the next beat may well work; a down DB is not fatal
                log.exception("heartbeat of %s failed", self.settings.host)
            if self.app is None or self.stopping.is_set():
                continue
            if self.consumer_alive():
                self.answered, self.missed = True, 0
            elif self.answered or time.monotonic() > self.started + self.startup_grace:
                # Before its first answer the worker may still be starting;
                # a worker that never answers is broken all the same.
                self.missed += 1
            if self.missed >= self.MISSED_PINGS_BEFORE_RESTART and not self.stopping.is_set():
                self.stopping.set()
                self.restart.request(
                    f"worker {self.node} has not answered its own ping {self.missed} times",
                    grace=min(self.settings.step_timeout, 30.0),
                    # Celery's own record of the task bodies running in this process.
                    busy=lambda: bool(worker_state.active_requests),
                )

    def stop(self, *, for_good: bool = True) -> None:
        """Stop beating; a worker that stops for good says so at once.

        NOTE: a worker that exits to be restarted (a self-requested restart,
        or Celery's "unrecoverable error" after a broker restart) leaves its
        service up: its supervisor starts it again within seconds, and the
        messages sent meanwhile wait in its queue. Refusing resizes and
        confirms for that moment would turn a restart into user-facing
        errors. If the restart never comes, the last heartbeat ages past
        ``service_down_time`` and the host is down, as in Nova. A host with
        other live worker processes stays up either way.
        """
        self.stopping.set()
        if not for_good:
            return
        with self.db.transaction() as s:
            services.leave(
                s,
                self.settings.host,
                self.node,
                self.settings.service_down_time,
                socket.gethostname(),
            )


def nodename(settings: Settings, slot: int = 1) -> str:
    """The Celery node name of a host's worker process in ``slot``; the journal
    records it per step. ``RESIZEFLOW_WORKER_NAME`` replaces the machine's name."""
    return f"{settings.host}-{slot}@{settings.worker_name or socket.gethostname()}"


def check_pool(settings: Settings, autoscale: tuple[int, int] | None) -> None:
    """Refuse a pool that cannot serve this host, with one sentence."""
    if settings.worker_pool == "prefork" and single_process_driver(settings.libvirt_uri):
        raise errors.ConfigError(
            "the libvirt test:/// driver keeps its domains in one process; "
            "use --pool threads (or solo) with it"
        )
    if autoscale is not None and settings.worker_pool not in pools.RESIZABLE:
        raise errors.ConfigError(
            f"--autoscale needs --pool threads or prefork: {pools.SOLO_CANNOT_GROW}"
        )


def run(
    settings: Settings,
    *,
    loglevel: str = "INFO",
    register: bool = False,
    autoscale: tuple[int, int] | None = None,
) -> None:
    """Run one worker process of ``settings.host``; ``autoscale`` is (max, min) threads."""
    check_pool(settings, autoscale)
    app = make_app(settings)
    app.set_default()
    # NOTE: join before anything touches the hypervisor: a refused duplicate
    # must not redefine (or, on test:///, recreate) the host's domains.
    probe = Database(settings.db_url)
    try:
        joined = join_host(settings, probe, register=register)
    finally:
        probe.dispose()
    node = joined.node
    if joined.alone:
        # Right after joining, before this process consumes anything (and before
        # another process of the host could join and start to): what a dead
        # predecessor took and never acknowledged goes first, rather than after
        # Redis' visibility timeout. A duplicate of a step that did run is harmless.
        unacked.restore_unacked(app, routing.queue_for(settings.host))
    runtime = build_runtime(settings, app, node)
    register_node(settings, runtime.db, runtime.virt)
    recovered = recover_domains(settings, runtime.db, runtime.virt)
    log.info("host %s: recovered %d domains", settings.host, len(recovered))
    context.install(runtime)
    # The watchdog pings through an app of its own, never the worker's connections.
    heartbeat = Heartbeat(runtime, make_app(settings))
    heartbeat.beat()
    # Other hosts copy disks to this one at the address it advertises (Nova's my_ip).
    # The other hosts and the DHCP agent flood its networks' broadcasts to its
    # tunnel endpoint (Neutron's local_ip); a simulated host plugs no network.
    with runtime.db.transaction() as s:
        services.advertise_migration_address(
            s, settings.host, settings.advertised_migration_address
        )
        if not settings.simulated_hypervisor:
            record_endpoint(s, settings.host, settings.tunnel_ip, settings.vxlan_port)
    heartbeat.start()
    check_migration_address(settings)
    # Like Nova's init_host, and further: steps this host's previous incarnation
    # was running when it died, and this host's stalled workflows, go again.
    redriven = recovery.reconcile(
        settings, runtime.db, app, host=settings.host, incarnation=runtime.incarnation
    )
    log.info("host %s: re-drove %d workflows at start", settings.host, len(redriven))
    worker = app.Worker(
        hostname=node,
        queues=[routing.queue_for(settings.host)],
        pool=pools.POOLS[settings.worker_pool],
        concurrency=settings.worker_concurrency,
        autoscale=list(autoscale) if autoscale else None,
        loglevel=loglevel,
        # Nothing here uses revokes or worker-to-worker events: mingle only
        # delays every start by a second of waiting for neighbours, and
        # gossip is one more consumer to fail when the broker restarts.
        without_mingle=True,
        without_gossip=True,
        # Celery's SIGTERM is a warm shutdown: the step in progress finishes
        # and is acknowledged before the process exits.
    )
    code = 1  # an exception out of Celery's worker is a failure too
    try:
        worker.start()
        code = heartbeat.restart.exit_code(worker.exitcode)
    finally:
        # Exit 0 is a shutdown someone asked for; anything else gets restarted.
        heartbeat.stop(for_good=code == 0)
    raise SystemExit(code)
