"""``python -m bench.idle NODE QUEUE...``: a Celery worker that consumes many host queues.

The scale bench stands in for the worker processes of many compute hosts
with a few of these: each is the product's Celery app (``make_app``, so the
same transport options, events and acks as ``resizeflow worker``, and like
it without mingle and gossip), consuming every queue it is given and
never receiving a message. It skips what a real worker does in the
database (joining the host, the heartbeat): only the broker is measured.
The broker comes from ``RESIZEFLOW_BROKER_URL`` (and
``RESIZEFLOW_BROKER_PREFIX``), as for any resizeflow process.
"""

from __future__ import annotations

import sys

from resizeflow import pools
from resizeflow.celery_app import make_app
from resizeflow.conf import Settings


def main(argv: list[str]) -> None:
    node, queues = argv[0], argv[1:]
    settings = Settings.from_env()
    app = make_app(settings)
    worker = app.Worker(
        hostname=node,
        queues=queues,
        pool=pools.POOLS[settings.worker_pool],
        concurrency=1,
        loglevel="WARNING",
        # As resizeflow.worker.run starts a host's worker.
        without_mingle=True,
        without_gossip=True,
    )
    worker.start()
    raise SystemExit(worker.exitcode)


if __name__ == "__main__":
    main(sys.argv[1:])
