"""The storage host's process: its daemon, reconciled, and a worker on its queue."""

from __future__ import annotations

import logging
import socket

from resizeflow.celery_app import make_app
from resizeflow.conf import Settings
from resizeflow.storage import tasks
from resizeflow.storage.client import queue_for
from resizeflow.storage.qsd import QsdConfig, QsdStorage

log = logging.getLogger(__name__)


def config(settings: Settings) -> QsdConfig:
    return QsdConfig(
        state_dir=settings.storage_dir(),
        address=settings.storage_address,
        port=settings.storage_port,
        bind=settings.storage_bind or settings.storage_address,
        name=settings.storage_host,
    )


def run(settings: Settings, *, loglevel: str = "INFO") -> None:
    """Serve ``settings.storage_host`` until stopped; exit 0 on a clean stop."""
    backend = QsdStorage(config(settings))
    # NOTE: the daemon is up and every recorded connection exported before the
    # worker takes a request, so an answer never races the reconcile.
    backend.start()
    tasks.install(backend)
    app = make_app(settings, include=("resizeflow.storage.tasks",))
    worker = app.Worker(
        hostname=f"{settings.storage_host}@{settings.worker_name or socket.gethostname()}",
        queues=[queue_for(settings.storage_host)],
        pool="threads",
        concurrency=settings.worker_concurrency,
        loglevel=loglevel,
        without_mingle=True,
        without_gossip=True,
    )
    code = 1
    try:
        worker.start()
        code = worker.exitcode or 0
    finally:
        # A clean stop takes the exports down with the daemon; the next start
        # exports the recorded connections again. (After a SIGKILL the daemon
        # lives on in its own session and the next start reuses it.)
        backend.stop()
    raise SystemExit(code)
