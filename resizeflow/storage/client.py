"""The storage host as other processes reach it: a BlockStorage over host calls.

Every operation is a call on the storage host's queue that waits for the
answer (see :mod:`resizeflow.hostcall`), so the API and a compute step get the
result, or the storage host's error, synchronously, within a timeout.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from resizeflow import hostcall
from resizeflow.storage.base import Capacity, ConnectionInfo

# The BlockStorage operations the storage host answers, each a task of its own.
OPERATIONS = (
    "create_volume",
    "delete_volume",
    "initialize_connection",
    "terminate_connection",
    "connections",
    "capacity",
)


def queue_for(storage_host: str) -> str:
    """The queue a storage host's worker consumes."""
    return f"storage.{storage_host}"


def task_name(operation: str) -> str:
    return f"resizeflow.storage.{operation}"


class RemoteStorage:
    """A :class:`~resizeflow.storage.base.BlockStorage` on another process's daemon."""

    def __init__(self, app: Celery, storage_host: str, timeout: float) -> None:
        self.app = app
        self.storage_host = storage_host
        self.timeout = timeout

    def _call(self, operation: str, *args: Any) -> Any:
        return hostcall.call(
            self.app,
            queue_for(self.storage_host),
            task_name(operation),
            *args,
            timeout=self.timeout,
            host=self.storage_host,
        )

    def create_volume(self, volume_id: str, size_gb: int) -> None:
        self._call("create_volume", volume_id, size_gb)

    def delete_volume(self, volume_id: str) -> None:
        self._call("delete_volume", volume_id)

    def initialize_connection(self, volume_id: str, host: str) -> ConnectionInfo:
        return ConnectionInfo.from_dict(self._call("initialize_connection", volume_id, host))

    def terminate_connection(self, volume_id: str, host: str) -> None:
        self._call("terminate_connection", volume_id, host)

    def connections(self, volume_id: str) -> list[str]:
        return [str(h) for h in self._call("connections", volume_id)]

    def capacity(self) -> Capacity:
        found = self._call("capacity")
        return Capacity(total_bytes=int(found["total_bytes"]), free_bytes=int(found["free_bytes"]))
