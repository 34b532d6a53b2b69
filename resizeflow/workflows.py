"""The one place that knows step order and routing.

A workflow is a Celery chain of immutable signatures, each carrying only the
migration id and each routed to the queue of the compute host that must run it.
Tasks are referred to by name, so building a chain never imports the step code
(or libvirt) into the API process.

================  =====================================================  =========
flow              steps, in order                                         queue
================  =====================================================  =========
resize            prep_resize                                             dest
                  resize_instance                                         source
                  finish_resize                                           dest
confirm           teardown_source_network, confirm_migration,             source
                  drop_source_claim, finish_confirm
revert            teardown_dest_network, destroy_dest_domain,             dest
                  terminate_volume_connections, drop_dest_claim
                  finish_revert                                           source
================  =====================================================  =========
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from celery import Celery, chain
from celery.canvas import Signature

from resizeflow.db.journal import PlannedStep

Side = Literal["source", "dest"]


@dataclass(frozen=True)
class Step:
    name: str
    side: Side


def _steps(flow: str, side: Side, *names: str) -> tuple[Step, ...]:
    return tuple(Step(f"resizeflow.{flow}.{n}", side) for n in names)


FLOWS: dict[str, tuple[Step, ...]] = {
    "resize": (
        *_steps("resize", "dest", "prep_resize"),
        *_steps("resize", "source", "resize_instance"),
        *_steps("resize", "dest", "finish_resize"),
    ),
    "confirm": _steps(
        "confirm",
        "source",
        "teardown_source_network",
        "confirm_migration",
        "drop_source_claim",
        "finish_confirm",
    ),
    # NOTE: everything on the dest comes first, so the source is only touched
    # once the new domain is gone and its claim is freed; finish_revert can then
    # take the old flavor back without racing the dest for the instance.
    "revert": (
        *_steps(
            "revert",
            "dest",
            "teardown_dest_network",
            "destroy_dest_domain",
            "terminate_volume_connections",
            "drop_dest_claim",
        ),
        *_steps("revert", "source", "finish_revert"),
    ),
}

# Single-task operations on an instance; they take the instance uuid.
SPAWN = "resizeflow.instance.spawn"
STOP = "resizeflow.instance.stop"
START = "resizeflow.instance.start"
DELETE = "resizeflow.instance.delete"


PURGE = "resizeflow.host.purge_instance_files"
FINISH_CLEANUP = "resizeflow.host.finish_cleanup"

# Periodic tasks run in the beat process, on a queue of their own.
PERIODIC_QUEUE = "resizeflow.periodic"


def queue_for(host: str) -> str:
    """The queue a compute host's worker consumes."""
    return f"compute.{host}"


def all_step_names() -> list[str]:
    return [step.name for steps in FLOWS.values() for step in steps]


def flow_of(step_name: str) -> str:
    return step_name.split(".")[1]


def plan(flow: str, source_host: str, dest_host: str) -> list[PlannedStep]:
    """The steps of ``flow`` with the host each must run on."""
    hosts = {"source": source_host, "dest": dest_host}
    return [PlannedStep(step.name, hosts[step.side]) for step in FLOWS[flow]]


def signature(app: Celery, name: str, arg: int | str, host: str) -> Signature:
    return app.signature(name, args=(arg,), queue=queue_for(host), immutable=True)


def build(app: Celery, migration_id: int, steps: Sequence[PlannedStep]) -> Signature:
    return chain(*(signature(app, s.step, migration_id, s.host) for s in steps))


def launch(
    app: Celery,
    migration_id: int,
    steps: Sequence[PlannedStep],
    then: Signature | None = None,
) -> None:
    """Send a planned workflow; ``then`` runs after its last step succeeds."""
    sig = build(app, migration_id, steps)
    if then is not None:
        sig = sig | then
    sig.apply_async()


def launch_cleanup(
    app: Celery, migration_id: int, instance_uuid: str, hosts: Sequence[str]
) -> None:
    """Purge a deleted server's leftovers on each host, then mark the migration failed."""
    sigs = [signature(app, PURGE, instance_uuid, host) for host in dict.fromkeys(hosts)]
    chain(*sigs, signature(app, FINISH_CLEANUP, migration_id, hosts[-1])).apply_async()


def launch_instance_task(app: Celery, name: str, instance_uuid: str, host: str) -> None:
    signature(app, name, instance_uuid, host).apply_async()
