"""What a step works with: its locked rows, its drivers, and the host it runs on."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from resizeflow.conf import Settings
from resizeflow.db.models import Instance, Migration, StepJournal
from resizeflow.db.session import Database
from resizeflow.drivers.base import (
    ImageSpec,
    InstanceSpec,
    NodeRef,
    Notification,
    Notifier,
    VifSpec,
    VirtDriver,
)
from resizeflow.drivers.images import IMAGE_REF_KEY, ImageStore
from resizeflow.drivers.network import SqlNetwork
from resizeflow.drivers.placement import SqlPlacement
from resizeflow.drivers.quota import SqlQuota
from resizeflow.drivers.volume import SqlVolumes


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

    @property
    def network(self) -> SqlNetwork:
        return SqlNetwork(self.session)

    @property
    def volumes(self) -> SqlVolumes:
        return SqlVolumes(self.session)

    @functools.cached_property
    def placement(self) -> SqlPlacement:
        # One per step: it remembers the nodes it has locked in the transaction.
        return SqlPlacement(self.session)

    @property
    def quota(self) -> SqlQuota:
        conf = self.settings
        return SqlQuota(
            self.session,
            {"cores": conf.quota_cores, "ram": conf.quota_ram, "instances": conf.quota_instances},
        )

    def image(self) -> ImageSpec | None:
        """The image the instance was booted from, as files in the image store."""
        ref = (self.instance.system_metadata or {}).get(IMAGE_REF_KEY)
        return ImageStore(self.settings.images_dir()).spec(ref) if ref else None

    def spec(self, flavor: dict[str, Any] | None = None) -> InstanceSpec:
        # Reading the ports must not flush the step's pending changes early.
        with self.session.no_autoflush:
            vifs = self.network.vifs(self.instance.uuid)
        return spec_of(
            self.instance.uuid, flavor or self.instance.flavor, image=self.image(), vifs=vifs
        )

    def notify(self, event_type: str, **extra: Any) -> None:
        """Queue a notification; the runner publishes it only after the step commits."""
        inst = self.instance
        data = {
            "uuid": inst.uuid,
            "host": inst.host,
            "node": inst.node,
            "tenant_id": inst.project_id,
            "user_id": inst.user_id,
            "state": inst.vm_state.value,
            "task_state": inst.task_state.value if inst.task_state else None,
            "power_state": inst.power_state.name.lower(),
            "flavor": inst.flavor,
            **extra,
        }
        self.notifications.append(
            Notification(
                event_type=f"instance.{event_type}",
                publisher_id=f"nova-compute:{self.host}",
                payload={
                    "nova_object.name": "InstanceActionPayload",
                    "nova_object.namespace": "nova",
                    "nova_object.version": "1.8",
                    "nova_object.data": data,
                },
            )
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
        return NodeRef(self.migration.dest_compute, self.migration.dest_node)

    @property
    def same_host(self) -> bool:
        return self.migration.source_compute == self.migration.dest_compute
