"""The bench's worker: ``python -m bench.worker HOST``.

It is ``resizeflow worker --host HOST --register`` with the bench's no-op
tasks registered too, so that bare chains run in the same processes and on
the same queues as the workflow steps. Production workers never load them.
"""

from __future__ import annotations

import sys

from bench import noop  # noqa: F401  (registers the no-op tasks with every app)
from resizeflow.conf import load
from resizeflow.worker import run


def main(argv: list[str]) -> None:
    run(load().with_host(argv[1]), loglevel="WARNING", register=True)


if __name__ == "__main__":
    main(sys.argv)
