"""Host tasks: work on a compute host that is not a step of a flow.

Cleaning up after a server deleted while its migration had errored out
(purge its files, finish the migration's cleanup) follows the steps' retry
policy; a final failure is logged and left for the periodic cleanup, which
sends the work again. The calls whose answer a request waits for (a guest's
console log, whether a domain is still whole) are reads, neither journaled
nor retried: they answer through :mod:`resizeflow.hostcall`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Task

from resizeflow import hostcall, retry
from resizeflow.db import api as dbapi
from resizeflow.runner.failing import retry_later
from resizeflow.steps import cleanup, console
from resizeflow.steps.context import current

log = logging.getLogger(__name__)


def _under_retry_policy(task: Task[Any, Any], fn: Callable[[], Any]) -> Any:
    """Host tasks follow the same retry policy as steps; a final failure is logged
    and left for the periodic cleanup, which sends the work again."""
    rt = current()
    try:
        return fn()
    except Exception as exc:
        if retry.is_final(rt.settings, exc, task.request.retries):
            log.exception("%s failed for good on %s", task.name, rt.host)
            raise
        raise retry_later(task, rt.settings, exc) from exc


def purge_instance_files(task: Task[Any, Any], instance_uuid: str) -> str:
    rt = current()
    removed = _under_retry_policy(
        task, lambda: cleanup.purge_instance_files(rt.virt, instance_uuid)
    )
    log.info("purged %s of deleted instance %s on %s", removed or "nothing", instance_uuid, rt.host)
    return instance_uuid


def finish_cleanup(task: Task[Any, Any], migration_id: int) -> int:
    rt = current()

    def work() -> None:
        with rt.db.transaction() as s:
            cleanup.fail_migration(s, dbapi.get_migration(s, migration_id, lock=True))

    _under_retry_policy(task, work)
    return migration_id


def console_output(
    task: Task[Any, Any], instance_uuid: str, length: int | None, reply_to: str
) -> None:
    """Answer an ``os-getConsoleOutput``."""
    rt = current()
    hostcall.answer(
        task.app, reply_to, lambda: console.console_output(rt.virt, instance_uuid, length)
    )


def domain_whole(task: Task[Any, Any], instance_uuid: str, reply_to: str) -> None:
    """Answer whether this host still has the instance's domain, whole."""
    rt = current()
    hostcall.answer(task.app, reply_to, lambda: rt.virt.domain_whole(instance_uuid))
