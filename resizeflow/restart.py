"""Asking this process's supervisor for a fresh one.

A worker or beat process that finds itself broken (its consumer no longer
answers, its embedded scheduler died) stops with Celery's warm shutdown, so
running steps finish, and then exits non-zero. The exit code matters: Celery
exits 0 after a SIGTERM, and systemd's ``Restart=on-failure`` restarts only a
process that failed.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# EX_SOFTWARE: an internal error, for the supervisor's logs.
EXIT_RESTART = 70
# Seconds a warm shutdown gets before an idle process leaves on its own.
SETTLE = 2.0


class Restart:
    """A one-shot request to stop this process for a restart."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._lock = threading.Lock()

    def request(self, reason: str, grace: float, busy: Callable[[], bool] | None = None) -> None:
        """Start a warm shutdown; leave anyway after ``grace`` seconds, or as
        soon as ``busy`` says that no work of ours is running any more."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        log.critical("%s; stopping so that the supervisor starts a fresh process", reason)
        os.kill(os.getpid(), signal.SIGTERM)
        # NOTE: a broken consumer can keep the warm shutdown from ending (seen
        # after RabbitMQ dropped a vhost under a worker). Waiting out the whole
        # grace then only delays the fresh process: once no step is running,
        # nothing is lost by leaving, since unacknowledged messages go back to
        # the broker and the journal and the reconciler take over the rest.
        watcher = threading.Thread(
            target=self._leave, args=(grace, busy), name="resizeflow-restart", daemon=True
        )
        watcher.start()

    @staticmethod
    def _leave(grace: float, busy: Callable[[], bool] | None) -> None:
        deadline = time.monotonic() + grace
        # Give Celery's own warm shutdown a moment to finish cleanly first.
        time.sleep(min(grace, SETTLE))
        while busy is None or busy():
            if time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        os._exit(EXIT_RESTART)

    def exit_code(self, celery_code: int | None) -> int:
        """What the process exits with once Celery's worker has stopped."""
        return EXIT_RESTART if self.reason is not None else int(celery_code or 0)
