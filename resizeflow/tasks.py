"""The Celery tasks: every step of the flow table, and the host tasks, registered by name.

A step's task hands its delivery to the step runner (:mod:`resizeflow.runner`),
which claims, locks, runs and commits it, or fails it; a host task hands its
work to :mod:`resizeflow.runner.hostwork`. Nothing else happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task, shared_task

from resizeflow import flows
from resizeflow.runner import hostwork
from resizeflow.runner.delivery import Delivery

TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "max_retries": None,  # the budget comes from settings, see resizeflow.retry
}


def _register(flow: flows.Flow, step: flows.Step) -> Any:
    def body(self: Task[Any, Any], key: Any) -> Any:
        return Delivery(self, flow, step, key).run()

    body.__name__ = step.short
    body.__qualname__ = step.short
    return shared_task(name=step.task, **TASK_OPTIONS)(body)  # type: ignore[no-untyped-call]


# Every step of every flow in the table, by its Celery task name.
STEP_TASKS: dict[str, Any] = {
    step.task: _register(flow, step) for flow in flows.FLOWS.values() for step in flow.steps
}


# -- host tasks: cleaning up after a deleted server, and answering calls --------
HOST = flows.HOST_TASKS


def _host_task(name: str) -> Callable[[Callable[..., Any]], Any]:
    deco: Callable[[Callable[..., Any]], Any] = shared_task(name=name, **TASK_OPTIONS)
    return deco


@_host_task(HOST.purge_instance_files)
def purge_instance_files(self: Task[Any, Any], instance_uuid: str) -> str:
    return hostwork.purge_instance_files(self, instance_uuid)


@_host_task(HOST.finish_cleanup)
def finish_cleanup(self: Task[Any, Any], migration_id: int) -> int:
    return hostwork.finish_cleanup(self, migration_id)


@shared_task(name=HOST.console_output, bind=True, ignore_result=True)
def console_output(
    self: Task[Any, Any], instance_uuid: str, length: int | None, reply_to: str
) -> None:
    """Answer an ``os-getConsoleOutput``: a read, so neither journaled nor retried."""
    hostwork.console_output(self, instance_uuid, length, reply_to)


@shared_task(name=HOST.domain_whole, bind=True, ignore_result=True)
def domain_whole(self: Task[Any, Any], instance_uuid: str, reply_to: str) -> None:
    """Answer whether this host still has the instance's domain, whole."""
    hostwork.domain_whole(self, instance_uuid, reply_to)
