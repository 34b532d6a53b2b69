"""A host's worker for both engines: ``python -m bench.taskflow_worker HOST``.

It is the bench's worker (:mod:`bench.worker`: ``resizeflow worker`` plus the
no-op tasks) with a TaskFlow ``Worker`` beside it in the same process, on the
topic ``HOST``, serving that host's step tasks with as many threads as the
Celery pool has. One process per host serves both, and that is needed: the
libvirt ``test:///`` driver keeps its domains inside the process, and only
one worker process per host may run on it. So the servers that resizeflow's
chains booted and resized are there for TaskFlow's tasks to confirm or
revert, on the very same driver. The engine that is not being measured
idles meanwhile (a Celery consumer, a TaskFlow consumer), in both phases.
"""

from __future__ import annotations

import logging
import sys
import threading

from taskflow.engines.worker_based.worker import Worker

from bench import worker
from bench.taskflow_tasks import EXCHANGE, Wire, task_class
from resizeflow.conf import load


def main(argv: list[str]) -> None:
    host = argv[1]
    settings = load().with_host(host)
    wire = Wire.of(settings)
    # TaskFlow logs a line per request at INFO; the bench reads the journal.
    logging.getLogger("taskflow").setLevel(logging.WARNING)
    peer = Worker(
        EXCHANGE,
        host,
        [task_class(host)],
        threads_count=settings.worker_concurrency,
        url=wire.url,
        transport_options=wire.transport_options,
    )
    # Its tasks find the host runtime that the Celery worker installs at start;
    # the engine sends none before every worker has joined its host.
    threading.Thread(
        target=peer.run, kwargs={"display_banner": False}, name="taskflow-worker", daemon=True
    ).start()
    try:
        worker.main(argv)
    finally:
        peer.stop()


if __name__ == "__main__":
    main(sys.argv)
