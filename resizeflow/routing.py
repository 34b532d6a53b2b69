"""Routing: the one place that knows hosts and queues.

It turns the flow table into Celery chains on host queues (:func:`queue_for`,
:func:`plan`, :func:`build`, :func:`launch`), and asks a host a question and
waits for its answer (:func:`ask`, Nova's RPC call).

A workflow is a Celery chain of immutable signatures, each carrying only its
subject (a migration id, or an instance uuid for the one-step instance
operations) and each routed to the queue of the compute host that must run
it. Tasks are referred to by their names in :mod:`resizeflow.flows`, so
building a chain never imports the step code (or libvirt) into the API process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery, chain
from celery.canvas import Signature

from resizeflow import hostcall
from resizeflow.db.journal import PlannedStep
from resizeflow.flows import HOST_TASKS, Flow, Side

# Periodic tasks run in the beat process, on a queue of their own.
PERIODIC_QUEUE = "resizeflow.periodic"


def queue_for(host: str) -> str:
    """The queue a compute host's worker consumes."""
    return f"compute.{host}"


def plan(
    flow: Flow, *, source: str | None = None, dest: str | None = None, host: str | None = None
) -> list[PlannedStep]:
    """The steps of ``flow`` with the host each must run on.

    A migration's flows name its ``source`` and ``dest``; an instance
    operation runs on the instance's ``host``.
    """
    hosts = {Side.SOURCE: source, Side.DEST: dest, Side.INSTANCE: host}
    planned = []
    for step in flow.steps:
        on = hosts[step.side]
        if on is None:
            raise ValueError(f"{flow.name} needs a {step.side} host for {step.task}")
        planned.append(PlannedStep(step.task, on))
    return planned


def signature(app: Celery, name: str, arg: int | str, host: str) -> Signature:
    return app.signature(name, args=(arg,), queue=queue_for(host), immutable=True)


def build(app: Celery, subject: int | str, steps: Sequence[PlannedStep]) -> Signature:
    return chain(*(signature(app, s.step, subject, s.host) for s in steps))


def launch(
    app: Celery,
    subject: int | str,
    steps: Sequence[PlannedStep],
    then: Signature | None = None,
) -> None:
    """Send a planned workflow; ``then`` runs after its last step succeeds."""
    sig = build(app, subject, steps)
    if then is not None:
        sig = sig | then
    sig.apply_async()


def cleanup(app: Celery, migration_id: int, instance_uuid: str, hosts: Sequence[str]) -> Signature:
    """Purge a deleted server's leftovers on each host, then mark the migration failed."""
    sigs = [
        signature(app, HOST_TASKS.purge_instance_files, instance_uuid, host)
        for host in dict.fromkeys(hosts)
    ]
    return chain(*sigs, signature(app, HOST_TASKS.finish_cleanup, migration_id, hosts[-1]))


def launch_cleanup(
    app: Celery, migration_id: int, instance_uuid: str, hosts: Sequence[str]
) -> None:
    cleanup(app, migration_id, instance_uuid, hosts).apply_async()


def ask(app: Celery, host: str, name: str, *args: Any, timeout: float) -> Any:
    """Run host task ``name`` on ``host``'s queue and wait for its answer (Nova's RPC call).

    See :func:`resizeflow.hostcall.call`: a host that is busy or down never
    runs it late; the caller gets HostDidNotAnswer instead of a hang.
    """
    return hostcall.call(app, queue_for(host), name, *args, timeout=timeout, host=host)
