"""The one retry policy: transient or final, and the backoff between tries."""

from __future__ import annotations

import pytest
import sqlalchemy.exc

from resizeflow import errors, retry
from resizeflow.conf import Settings

pytestmark = pytest.mark.fast

SETTINGS = Settings(step_max_retries=3, retry_backoff=0.5, retry_backoff_max=4.0)


@pytest.mark.parametrize(
    "exc",
    [
        errors.TransientError(reason="libvirtd went away"),
        sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed")),
        ConnectionResetError(),
        TimeoutError(),
    ],
    ids=type,
)
def test_hiccups_are_retried_until_the_budget_is_spent(exc: Exception) -> None:
    assert retry.is_transient(exc)
    assert [retry.is_final(SETTINGS, exc, n) for n in range(5)] == [
        False,
        False,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize(
    "exc",
    [errors.StepFailed(step="s", reason="bad"), ValueError("bug"), KeyError("x")],
    ids=type,
)
def test_anything_else_is_final_at_once(exc: Exception) -> None:
    assert not retry.is_transient(exc)
    assert retry.is_final(SETTINGS, exc, 0)


@pytest.mark.parametrize("retries", range(8))
def test_backoff_doubles_with_equal_jitter_up_to_the_cap(retries: int) -> None:
    ceiling = min(4.0, 0.5 * 2**retries)
    waits = [retry.backoff(SETTINGS, retries) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits)
    # Jitter spreads the retries of many steps that failed together.
    assert max(waits) - min(waits) > ceiling / 10
