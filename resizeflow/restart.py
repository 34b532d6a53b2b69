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

log = logging.getLogger(__name__)

# EX_SOFTWARE: an internal error, for the supervisor's logs.
EXIT_RESTART = 70


class Restart:
    """A one-shot request to stop this process for a restart."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._lock = threading.Lock()

    def request(self, reason: str, grace: float) -> None:
        """Start a warm shutdown; leave anyway after ``grace`` seconds."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
        log.critical("%s; stopping so that the supervisor starts a fresh process", reason)
        os.kill(os.getpid(), signal.SIGTERM)
        # NOTE: a broken consumer can keep the warm shutdown from ending; the
        # journal and the reconciler take over from whatever is left undone.
        timer = threading.Timer(grace, os._exit, args=(EXIT_RESTART,))
        timer.daemon = True
        timer.start()

    def exit_code(self, celery_code: int | None) -> int:
        """What the process exits with once Celery's worker has stopped."""
        return EXIT_RESTART if self.reason is not None else int(celery_code or 0)
