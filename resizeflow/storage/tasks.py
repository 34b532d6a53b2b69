"""The storage host's tasks: one per BlockStorage operation, answering its caller.

Each runs the operation on the backend :func:`install`\\ ed at the process's
start and sends back the result as JSON. None is journaled or retried: every
operation is idempotent, and a caller that got no answer asks again.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from celery import Task, shared_task

from resizeflow import hostcall
from resizeflow.storage.base import BlockStorage, ConnectionInfo
from resizeflow.storage.client import OPERATIONS, task_name

_backend: list[BlockStorage] = []


def install(backend: BlockStorage) -> None:
    _backend[:] = [backend]


def _json(value: Any) -> Any:
    if isinstance(value, ConnectionInfo):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _register(operation: str) -> Any:
    def body(self: Task[Any, Any], *args: Any) -> None:
        *call_args, reply_to = args
        backend = _backend[0]
        hostcall.answer(self.app, reply_to, lambda: _json(getattr(backend, operation)(*call_args)))

    body.__name__ = body.__qualname__ = operation
    return shared_task(name=task_name(operation), bind=True, ignore_result=True)(body)


TASKS = {operation: _register(operation) for operation in OPERATIONS}
