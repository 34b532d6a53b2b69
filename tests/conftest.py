"""Fixtures: a real stack per database backend, shared by the tests of a session.

Service-backed tests skip when Redis or PostgreSQL is not reachable, except in
CI (``CI`` set), where a missing service is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resizeflow.db.migrate import upgrade
from resizeflow.db.session import Database
from tests.invariants import assert_allocation_invariant
from tests.stack import (
    PG_ADMIN_URL,
    RABBITMQ_URL,
    REDIS_URL,
    Stack,
    build_stack,
    create_pg_database,
    destroy_stack,
    drop_pg_database,
    service_up,
)

# The two-host fixtures (one sshd per test host); see tests/hosts.py.
pytest_plugins = ("tests.hosts",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.services)


def require(url: str, port: int, name: str) -> None:
    if service_up(url, port):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{name} at {url} is not reachable, and CI needs it")
    pytest.skip(f"{name} at {url} is not reachable")


# Every functional test runs on each database and each broker.
STACKS = [
    pytest.param(("sqlite", "redis"), id="sqlite-redis"),
    pytest.param(("postgresql", "redis"), id="postgresql-redis"),
    pytest.param(("sqlite", "rabbitmq"), id="sqlite-rabbitmq"),
    pytest.param(("postgresql", "rabbitmq"), id="postgresql-rabbitmq"),
]


@pytest.fixture(scope="session", params=STACKS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    backend, broker = request.param
    if broker == "redis":
        require(REDIS_URL, 6379, "Redis")
    else:
        require(RABBITMQ_URL, 5672, "RabbitMQ")
    if backend == "postgresql":
        require(PG_ADMIN_URL, 5432, "PostgreSQL")
    built = build_stack(backend, Path(tmp_path_factory.mktemp("stack")), broker=broker)
    try:
        yield built
    finally:
        destroy_stack(built)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, upgraded database of each backend, dropped afterwards; no workers."""
    url = f"sqlite:///{tmp_path / 'rf.sqlite'}"
    if request.param == "postgresql":
        require(PG_ADMIN_URL, 5432, "PostgreSQL")
        url = create_pg_database()
    db = Database(url)
    try:
        upgrade(db)
        yield db
    finally:
        db.dispose()
        if request.param == "postgresql":
            drop_pg_database(url)


@pytest.fixture
def rf(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The stack, with the allocation invariant checked after the test."""
    stack.set_failpoints({})
    yield stack
    stack.quiesce()
    stack.set_failpoints({})
    assert_allocation_invariant(stack.db)


@pytest.fixture
def project(request: pytest.FixtureRequest) -> str:
    """A project of its own per test, so quotas never interfere."""
    import uuid

    return f"p-{uuid.uuid4().hex[:8]}"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.chaos import REPORTS, summary

    if REPORTS:
        table = summary(REPORTS)
        terminalreporter.write_sep("=", "chaos summary")
        terminalreporter.write_line(table)
        out = os.environ.get("RESIZEFLOW_CHAOS_SUMMARY")
        if out:
            Path(out).write_text(table + "\n")
