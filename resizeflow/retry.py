"""The one retry policy: which failures are worth another try, and when.

A failure is transient when something a step talks to hiccupped (the
database, the broker, libvirt's connection) and the step itself is fine. A
transient failure is retried with exponential backoff and equal jitter until
the step's budget is spent; anything else, or a transient failure past the
budget, is final and errors the workflow out.

Work that has not started yet (a delivery that could not even be claimed)
has done nothing, so it is retried without a budget.
"""

from __future__ import annotations

import random

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc

from resizeflow import errors
from resizeflow.conf import Settings

TRANSIENT: tuple[type[Exception], ...] = (
    errors.TransientError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, errors.InstanceFaultRollback):
        exc = exc.inner  # the guest was not touched; the failure itself decides
    return isinstance(exc, TRANSIENT)


def is_final(settings: Settings, exc: BaseException, retries: int) -> bool:
    """Whether a failure after ``retries`` earlier retries ends the work for good."""
    return not is_transient(exc) or retries >= settings.step_max_retries


def backoff(settings: Settings, retries: int) -> float:
    """Exponential backoff with equal jitter, capped by settings."""
    ceiling = min(settings.retry_backoff_max, settings.retry_backoff * (2**retries))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))
