"""Celery execution pools for host workers, resizable at run time where they can be.

Celery's own threads pool has no ``grow`` or ``shrink``, so Flower's pool
buttons and ``--autoscale`` fail on it. A host worker on the libvirt test
driver must run threads (the driver keeps its domains in one process), so
:class:`ThreadPool` adds both. The solo pool runs one task at a time and can
never grow: :class:`SoloPool` says so in its info, which Flower shows on the
worker's page, and refuses a resize with that sentence.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.concurrency.solo import TaskPool as CelerySoloPool
from celery.concurrency.thread import TaskPool as CeleryThreadPool

# What ``resizeflow worker --pool`` takes, as Celery pool classes.
POOLS = {
    "threads": "resizeflow.pools:ThreadPool",
    "solo": "resizeflow.pools:SoloPool",
    "prefork": "prefork",
}
RESIZABLE = {"threads", "prefork"}
SOLO_CANNOT_GROW = "the solo pool runs one task at a time and cannot grow or shrink"


class ThreadPool(CeleryThreadPool):
    """Celery's threads pool, with ``grow`` and ``shrink``.

    NOTE: the executor never stops an idle thread, so shrinking lowers the
    executor's ceiling and Celery's prefetch count (``pool_shrink`` and the
    autoscaler both update it from ``num_processes``): at most ``limit``
    messages are delivered at once, which is the concurrency that matters.
    """

    _resize_lock = threading.Lock()

    def grow(self, n: int = 1) -> None:
        with self._resize_lock:
            self.limit += n
            self.executor._max_workers = self.limit  # type: ignore[attr-defined]

    def shrink(self, n: int = 1) -> None:
        with self._resize_lock:
            if self.limit - n < 1:
                raise ValueError(f"cannot shrink below one thread (now {self.limit})")
            self.limit -= n
            self.executor._max_workers = self.limit  # type: ignore[attr-defined]

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()  # type: ignore[misc]
        info["resizable"] = True
        return info


class SoloPool(CelerySoloPool):
    """Celery's solo pool, saying in its info that it cannot grow."""

    def grow(self, n: int = 1) -> None:
        raise NotImplementedError(SOLO_CANNOT_GROW)

    def shrink(self, n: int = 1) -> None:
        raise NotImplementedError(SOLO_CANNOT_GROW)

    def _get_info(self) -> dict[str, Any]:
        info: dict[str, Any] = super()._get_info()  # type: ignore[misc]
        info.update({"resizable": False, "note": SOLO_CANNOT_GROW})
        return info
