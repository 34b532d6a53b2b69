"""The functional tier's fixtures: a real stack per database and broker, shared by a session.

A test that takes ``stack`` (or ``rf``) runs on every combination of SQLite or
PostgreSQL with Redis or RabbitMQ, unless it is marked with the combinations it
is meant for, e.g. ``@pytest.mark.stacks("sqlite-redis", "postgresql-redis")``:
only those are generated, so no test is generated to be skipped.
RESIZEFLOW_TEST_STACKS (comma-separated ids) narrows the unmarked tests' combinations.

Service-backed tests skip when Redis, PostgreSQL or RabbitMQ is not reachable,
except in CI (``CI`` set), where a missing service is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from resizeflow.db.migrate import upgrade
from resizeflow.db.session import Database
from tests.support.invariants import assert_allocation_invariant
from tests.support.stack import (
    PG_ADMIN_URL,
    RABBITMQ_URL,
    REDIS_URL,
    Stack,
    build_stack,
    create_pg_database,
    destroy_stack,
    drop_pg_database,
    require,
)

# Every combination a stack is built on, by its test id: (database, broker).
STACKS = {
    "sqlite-redis": ("sqlite", "redis"),
    "postgresql-redis": ("postgresql", "redis"),
    "sqlite-rabbitmq": ("sqlite", "rabbitmq"),
    "postgresql-rabbitmq": ("postgresql", "rabbitmq"),
}


# The combinations a test without a ``stacks`` marker runs on. ``make test`` (and
# so CI) names two that between them cover both databases and both brokers;
# ``make test-matrix`` runs every test on all four.
DEFAULT_STACKS = [
    s for s in os.environ.get("RESIZEFLOW_TEST_STACKS", ",".join(STACKS)).split(",") if s
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "stack" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("stacks")
    ids = list(marker.args) if marker is not None else DEFAULT_STACKS
    unknown = [i for i in ids if i not in STACKS]
    if unknown or not ids:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: stacks{tuple(ids)}; each must be one of {list(STACKS)}"
        )
    # Session-scoped and keyed by value: tests on the same combination share one stack.
    metafunc.parametrize("stack", [STACKS[i] for i in ids], ids=ids, indirect=True, scope="session")


@pytest.fixture(scope="session")
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
    return f"p-{uuid.uuid4().hex[:8]}"
