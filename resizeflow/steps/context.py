"""What a step works with: its locked rows, its drivers, and the host it runs on.

A step function receives its :class:`StepContext` as ``ctx``, and only a
step's context is called that. The request context of the API and the
service layer (:class:`resizeflow.compute.policy.RequestContext`, who asks)
is called ``caller``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from resizeflow.conf import Settings
from resizeflow.db import api as dbapi
from resizeflow.db import services
from resizeflow.db.instances import SystemMetadata
from resizeflow.db.models import (
    Instance,
    InstanceAction,
    Migration,
    StepJournal,
    utcnow,
)
from resizeflow.db.session import Database
from resizeflow.openstack import payloads
from resizeflow.openstack.base import (
    ImageSpec,
    NodeRef,
    Notification,
    Notifier,
    TunnelPeer,
    VifSpec,
)
from resizeflow.openstack.images import ImageStore
from resizeflow.openstack.network import SqlNetwork
from resizeflow.openstack.placement import SqlPlacement
from resizeflow.openstack.quota import SqlQuota
from resizeflow.openstack.tunnels import tunnel_peers
from resizeflow.openstack.volume import InstanceVolumes
from resizeflow.storage.base import BlockStorage
from resizeflow.virt.base import InstanceSpec, PeerHost, VirtDriver


@dataclass(frozen=True)
class HypervisorWork:
    """A step's long hypervisor work: a disk copy, a clean shutdown, a boot wait.

    A step yields one after it has read its rows. The runner commits and
    unlocks them, runs ``run(deadline)`` under the step's lease (renewed while
    it runs, fenced against a copy that took the step over), then locks the
    rows again and resumes the step with the result, to commit its effects.
    ``run`` must touch no database row and be safe to repeat; ``deadline`` is
    a ``time.monotonic()`` value set by ``RESIZEFLOW_STEP_TIMEOUT``.
    """

    what: str
    run: Callable[[float], Any]


# A step with a hypervisor phase: code before its ``yield`` reads the rows,
# code after it commits the effects, with the rows locked again and refreshed.
PhasedStep = Generator[HypervisorWork, Any, None]


@dataclass
class HostRuntime:
    """One per worker process: the settings, database and drivers of its host."""

    settings: Settings
    db: Database
    virt: VirtDriver
    notifier: Notifier
    # The storage host's client: the steps connect and disconnect volumes
    # through it (None where no storage host is configured: no volumes then).
    storage: BlockStorage | None = None
    # "<celery node name>/<pid>": who the journal says runs a step, and whose
    # heartbeat renews the step's lease.
    incarnation: str = ""
    # The journal rows of the steps executing in this process now: only their
    # leases are renewed by the heartbeat.
    executing: set[int] = field(default_factory=set)
    executing_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return self.settings.host

    @contextmanager
    def executing_step(self, row_id: int) -> Iterator[None]:
        key = row_id
        with self.executing_lock:
            self.executing.add(key)
        try:
            yield
        finally:
            with self.executing_lock:
                self.executing.discard(key)

    def executing_now(self) -> list[int]:
        with self.executing_lock:
            return list(self.executing)


_runtime: HostRuntime | None = None
_runtime_lock = threading.Lock()


def install(runtime: HostRuntime) -> None:
    global _runtime
    with _runtime_lock:
        _runtime = runtime


def current() -> HostRuntime:
    if _runtime is None:
        raise RuntimeError("no host runtime: steps run only inside `resizeflow worker`")
    return _runtime


def spec_of(
    uuid: str,
    flavor: dict[str, Any],
    *,
    image: ImageSpec | None = None,
    vifs: tuple[VifSpec, ...] = (),
    tunnel_peers: tuple[TunnelPeer, ...] = (),
) -> InstanceSpec:
    return InstanceSpec(
        uuid=uuid,
        vcpus=int(flavor["vcpus"]),
        memory_mb=int(flavor["memory_mb"]),
        root_gb=int(flavor["root_gb"]),
        ephemeral_gb=int(flavor.get("ephemeral_gb", 0)),
        swap_mb=int(flavor.get("swap", 0) or 0),
        flavor_name=str(flavor.get("name", "")),
        image=image,
        vifs=vifs,
        tunnel_peers=tunnel_peers,
    )


@dataclass
class InstanceContext:
    """A step's view of one instance, inside the step's transaction."""

    session: Session
    runtime: HostRuntime
    instance: Instance
    notifications: list[Notification] = field(default_factory=list)

    @property
    def host(self) -> str:
        return self.runtime.host

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def virt(self) -> VirtDriver:
        return self.runtime.virt

    # One network and one volume driver per step: they remember what the
    # step read of the instance's ports and volumes, which its VIFs and every
    # notification ask for again.
    @functools.cached_property
    def network(self) -> SqlNetwork:
        return SqlNetwork(self.session)

    @functools.cached_property
    def volumes(self) -> InstanceVolumes:
        return InstanceVolumes(self.session)

    @functools.cached_property
    def placement(self) -> SqlPlacement:
        # One per step: it remembers the nodes it has locked in the transaction.
        return SqlPlacement(self.session)

    @property
    def quota(self) -> SqlQuota:
        return SqlQuota.with_defaults_of(self.session, self.settings)

    def image(self) -> ImageSpec | None:
        """The image the instance was booted from, as files in the image store."""
        ref = SystemMetadata(self.instance).image_ref
        return ImageStore(self.settings.images_dir()).spec(ref) if ref else None

    @functools.cached_property
    def tunnel_peers(self) -> tuple[TunnelPeer, ...]:
        # Read once per step: a host plugging a network floods to every other host.
        return tunnel_peers(self.session)

    def spec(self, flavor: dict[str, Any] | None = None) -> InstanceSpec:
        vifs = self.network.vifs(self.instance.uuid)
        return spec_of(
            self.instance.uuid,
            flavor or self.instance.flavor,
            image=self.image(),
            vifs=vifs,
            # Only an instance with ports plugs a network.
            tunnel_peers=self.tunnel_peers if vifs else (),
        )

    def notify(
        self,
        event_type: str,
        *,
        fault: BaseException | None = None,
        details: str | None = None,
        priority: str = "INFO",
        volume_id: str | None = None,
    ) -> None:
        """Queue ``instance.<event_type>``; the runner publishes it after the step commits.

        The payload is the Nova object for the event (see resizeflow/openstack/payloads.py):
        resize_prep carries the new flavor, create its own object, ``exists`` an
        audit period, a volume's attach or detach its ``volume_id``, and every
        other event Nova's InstanceActionPayload.
        """
        facts = self._facts()
        if event_type.startswith("resize_prep."):
            new = self.instance.new_flavor or self.instance.flavor
            payload = payloads.instance_action(facts, fault, details, new_flavor=new)
        elif event_type.startswith("create."):
            payload = payloads.instance_create(facts, fault, details)
        elif event_type == "exists":
            payload = payloads.instance_exists(facts, *payloads.audit_period(utcnow()))
        else:
            payload = payloads.instance_action(facts, fault, details, volume_id=volume_id)
        self.notifications.append(
            Notification(
                event_type=f"instance.{event_type}",
                publisher_id=f"nova-compute:{self.host}",
                payload=payload,
                priority=priority,
            )
        )

    def notify_exception(self, exc: BaseException, details: str | None = None) -> None:
        """Nova's ``compute.exception``, sent with an action's error event."""
        self.notifications.append(
            Notification(
                event_type="compute.exception",
                publisher_id=f"nova-compute:{self.host}",
                payload=payloads.exception(exc, details),
                priority="ERROR",
            )
        )

    @functools.cached_property
    def initiator(self) -> InstanceAction | None:
        """The instance action this work is for, read once per step: who asked
        for it, and with which request id, never changes."""
        return self._initiator()

    def _initiator(self) -> InstanceAction | None:
        """The instance action this work is for: the newest one of the server."""
        action: InstanceAction | None = self.session.scalars(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == self.instance.uuid)
            .order_by(InstanceAction.id.desc())
            .limit(1)
        ).first()
        return action

    def _facts(self) -> payloads.InstanceFacts:
        inst = self.instance
        sysmeta = SystemMetadata(inst)
        ports = sorted(self.network.ports(inst.uuid), key=lambda p: (p.network_name, p.id))
        volumes = self.volumes.attached(inst.uuid)
        action = self.initiator
        return payloads.InstanceFacts(
            uuid=inst.uuid,
            user_id=inst.user_id,
            project_id=inst.project_id,
            name=inst.display_name,
            description=inst.description,
            host=inst.host,
            node=inst.node,
            vm_state=inst.vm_state.value,
            task_state=inst.task_state.value if inst.task_state else None,
            power_state=inst.power_state.name.lower(),
            flavor=dict(inst.flavor),
            metadata=sysmeta.user_metadata,
            image_ref=sysmeta.image_ref,
            locked=inst.locked,
            locked_reason=sysmeta.locked_reason,
            created_at=inst.created_at,
            updated_at=inst.updated_at,
            launched_at=inst.launched_at,
            deleted_at=inst.deleted_at,
            request_id=action.request_id if action is not None else None,
            initiator_user=action.user_id if action is not None else None,
            initiator_project=action.project_id if action is not None else None,
            ports=tuple(
                payloads.PortFacts(p.id, p.network_name, p.mac_address, p.ip_address) for p in ports
            ),
            volumes=tuple(payloads.VolumeFacts(volume, device) for volume, device in volumes),
        )


@dataclass
class StepContext(InstanceContext):
    """A step's context: for a migration's flows the migration row is locked
    alongside the instance; an instance operation has none."""

    migration: Migration = field(default=None)  # type: ignore[assignment]
    # The step's own journal row, locked with the others.
    journal: StepJournal = field(default=None)  # type: ignore[assignment]

    @property
    def source(self) -> NodeRef:
        return NodeRef(self.migration.source_compute, self.migration.source_node)

    @property
    def dest(self) -> NodeRef:
        mig = self.migration
        # A migration's flows are planned only once scheduling has chosen its dest.
        assert mig.dest_compute is not None, mig.id
        assert mig.dest_node is not None, mig.id
        return NodeRef(mig.dest_compute, mig.dest_node)

    @property
    def same_host(self) -> bool:
        return self.migration.source_compute == self.migration.dest_compute

    def peer(self, host: str) -> PeerHost:
        """``host`` as a disk move reaches it: the migration address it advertised
        in its service record, and its instances dir."""
        return PeerHost(
            name=host,
            address=services.migration_address(self.session, host),
            instances_dir=PurePosixPath(self.settings.instances_dir(host).absolute()),
        )

    def record_event(self, event: str) -> None:
        """Record, in the flow's action, the event of a Nova method that this step
        runs within its own (finish_revert's stop_instance): it starts and ends now."""
        if self.journal is None or self.journal.action_id is None:
            return
        dbapi.record_event(
            self.session,
            dbapi.event_params(
                self.journal.action_id, event, host=self.host, start=utcnow(), result="Success"
            ),
        )

    def _initiator(self) -> InstanceAction | None:
        # The flow's own action (the journal knows it), not a later one.
        if self.journal is not None and self.journal.action_id is not None:
            return self.session.get(InstanceAction, self.journal.action_id)
        return super()._initiator()
