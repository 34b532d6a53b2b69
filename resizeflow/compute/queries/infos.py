"""What the read side returns: plain frozen values, so the API and the CLI never hold ORM rows.

Each resource's queries (:mod:`~resizeflow.compute.queries.servers`,
``flavors``, ``migrations``, ``actions``, ``hosts``) build these from the rows
they read, and the filters here say what a list asks for.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from resizeflow import errors
from resizeflow.db.models import utcnow


class MarkerNotFound(errors.Invalid):
    """A page's marker names nothing in the list (Nova answers 400)."""

    msg_fmt = "Marker %(marker)s could not be found."


@dataclass(frozen=True)
class FaultInfo:
    code: int
    message: str
    details: str | None
    created_at: dt.datetime


@dataclass(frozen=True)
class PortInfo:
    id: str
    network: str  # the network's name, the key of Nova's addresses
    mac_address: str
    ip_address: str | None = None


@dataclass(frozen=True)
class ServerInfo:
    uuid: str
    name: str
    project_id: str
    user_id: str
    status: str
    vm_state: str
    task_state: str | None
    power_state: int
    host: str | None
    node: str | None
    flavor: dict[str, Any]
    metadata: dict[str, str]
    image_ref: str | None
    locked: bool
    locked_by: str | None
    locked_reason: str | None
    description: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    launched_at: dt.datetime | None
    ports: tuple[PortInfo, ...]
    fault: FaultInfo | None
    # The volumes attached (or being attached): (volume id, delete_on_termination).
    volumes: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class FlavorInfo:
    id: int
    flavorid: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int
    swap: int
    is_public: bool
    disabled: bool
    description: str | None = None


@dataclass(frozen=True)
class MigrationInfo:
    id: int
    uuid: str
    instance_uuid: str
    migration_type: str
    status: str
    source_compute: str
    source_node: str
    # None when scheduling found no host (the migration is in error).
    dest_compute: str | None
    dest_node: str | None
    old_instance_type_id: int
    new_instance_type_id: int
    created_at: dt.datetime
    updated_at: dt.datetime
    user_id: str | None = None
    project_id: str | None = None
    dest_host: str | None = None  # the address the dest host advertises (Nova's my_ip)


@dataclass(frozen=True)
class EventInfo:
    event: str
    host: str | None
    start_time: dt.datetime
    finish_time: dt.datetime | None
    result: str | None
    traceback: str | None


@dataclass(frozen=True)
class ActionInfo:
    action: str
    instance_uuid: str
    request_id: str
    user_id: str
    project_id: str
    start_time: dt.datetime
    finish_time: dt.datetime | None
    message: str | None
    events: tuple[EventInfo, ...] | None  # None when the caller may not see events
    updated_at: dt.datetime | None = None  # the last change: a step starting or ending


@dataclass(frozen=True)
class ServiceInfo:
    id: int
    uuid: str
    binary: str
    host: str
    zone: str
    disabled: bool
    disabled_reason: str | None
    up: bool
    forced_down: bool
    updated_at: dt.datetime | None


@dataclass(frozen=True)
class HypervisorInfo:
    id: int
    uuid: str
    host: str
    node: str
    vcpus: int
    memory_mb: int
    local_gb: int
    vcpus_used: int
    memory_mb_used: int
    local_gb_used: int
    running_vms: int
    service: ServiceInfo | None
    servers: tuple[tuple[str, str], ...] = ()  # (uuid, name) of the servers on the node
    host_ip: str | None = None  # the address the host advertises (Nova's my_ip)


@dataclass(frozen=True)
class StepInfo:
    flow: str
    step: str
    position: int
    host: str
    status: str
    attempts: int
    deliveries: int
    worker: str | None
    enqueued_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_error: str | None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return ((self.finished_at or utcnow()) - self.started_at).total_seconds()


@dataclass(frozen=True)
class MigrationFilters:
    """Nova's os-migrations filters; ``host`` is the source or the dest, and wins over source."""

    instance_uuid: str | None = None
    status: str | None = None
    source_compute: str | None = None
    migration_type: str | None = None
    marker: str | None = None  # 2.59: the uuid of the last migration of the previous page
    user_id: str | None = None  # 2.80
    project_id: str | None = None  # 2.80
    host: str | None = None
    hidden: bool | None = None  # resizeflow's migrations (resizes) are never hidden


@dataclass(frozen=True)
class Page:
    """How many rows, and changed since or before when (Nova's 2.58/2.59/2.66)."""

    limit: int | None = None
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None


@dataclass(frozen=True)
class ActionFilters:
    """2.58: paging by request id, and changes since/before (2.66) a time."""

    limit: int | None = None
    marker: str | None = None
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None
