"""An instrumented worker: ``python -m bench.probe HOST OUT.json``.

It is ``resizeflow worker --host HOST`` with counters around it, and nothing
of the core changed. Per task name it counts the SQL statements and database
round trips (SQLAlchemy engine and pool events), the time spent in the virt
driver (every public :class:`LibvirtDriver` method, timed) and the time of the
whole task, attributing each to the task running on the calling thread. The
totals are written to OUT.json when the worker stops.

Round trips: each statement, each COMMIT or ROLLBACK, and on PostgreSQL the
BEGIN that psycopg sends before a transaction's first statement and the
pre-ping of every pool checkout. On PostgreSQL the server's transaction
status, as psycopg sees it, decides whether a BEGIN, COMMIT or ROLLBACK is
sent at all; a statement sent with its own ``COMMIT`` is one round trip.
SQLite's ``BEGIN IMMEDIATE`` is a statement already. The instrumented worker
is slower; its timings are for the split between driver and overhead, not for
throughput.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery import signals
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool

from resizeflow.conf import load
from resizeflow.virt.libvirt import LibvirtDriver

DRIVER_METHODS = (
    "spawn",
    "power_off",
    "power_on",
    "power_state",
    "migrate_disk_and_power_off",
    "finish_migration",
    "confirm_migration",
    "destroy",
    "purge",
    "finish_revert_migration",
)
FIELDS = ("runs", "statements", "round_trips", "transactions", "driver_s", "task_s")

_local = threading.local()
_lock = threading.Lock()
totals: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0.0))
# The statements of each task's first run, shortened: what the round trips are.
first_sql: dict[str, list[str]] = {}


def _current() -> dict[str, float] | None:
    return getattr(_local, "counts", None)


def _bump(key: str, amount: float = 1.0) -> None:
    counts = _current()
    if counts is not None:
        counts[key] += amount


def _short(statement: str) -> str:
    """``SELECT step_journal FOR UPDATE``: the verb, the first table, the lock."""
    words = " ".join(statement.split())
    verb = words.split(" ", 1)[0].upper()
    table = re.search(r"\b(?:FROM|UPDATE|INTO)\s+(\w+)", words, re.IGNORECASE)
    count = " count(*)" if "count(" in words.lower() else ""
    lock = " FOR UPDATE" if "FOR UPDATE" in words.upper() else ""
    return f"{verb}{count} {table.group(1) if table else ''}{lock}".strip()


_ENDS_WITH_COMMIT = re.compile(r"(^|;)\s*COMMIT\s*$", re.IGNORECASE)


def _autocommit(conn: Any) -> bool:
    # psycopg in autocommit mode sends no BEGIN of its own.
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def _pg_idle(conn: Any) -> bool:
    """Whether the server has no transaction open on this psycopg connection.

    psycopg reads that from every reply: it sends its own BEGIN before a
    statement only when idle (and not in autocommit mode), and a COMMIT or
    ROLLBACK only when not idle. A statement may carry its own transaction
    control (``...; COMMIT``), so the status is what tells.
    """
    from psycopg import pq

    status = conn.connection.dbapi_connection.pgconn.transaction_status
    return bool(status == pq.TransactionStatus.IDLE)


def _on_execute(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
    sql = getattr(_local, "sql", None)
    if sql is not None:
        sql.append(_short(statement))
    _bump("statements")
    _bump("round_trips")
    # psycopg opens a transaction with a BEGIN of its own before the first statement.
    if conn.dialect.name == "postgresql" and not _autocommit(conn) and _pg_idle(conn):
        _bump("round_trips")
    if _ENDS_WITH_COMMIT.search(statement):
        _bump("transactions")  # its transaction ends with it, in the same round trip


def _on_end(conn: Any) -> None:
    if conn.dialect.name == "postgresql":
        if _pg_idle(conn):
            return  # nothing open on the server: psycopg sends nothing
    elif _autocommit(conn):
        return
    _bump("round_trips")
    _bump("transactions")


def _on_checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
    # A pool that pre-pings sends a query on every checkout (SQLite's never does).
    if "sqlite" not in type(dbapi_conn).__module__ and proxy._pool._pre_ping:
        _bump("round_trips")


def install_counters() -> None:
    event.listen(Engine, "before_cursor_execute", _on_execute)
    event.listen(Engine, "commit", _on_end)
    event.listen(Engine, "rollback", _on_end)
    event.listen(Pool, "checkout", _on_checkout)


def _timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _bump("driver_s", time.perf_counter() - t0)

    return wrapper


def time_driver() -> None:
    for name in DRIVER_METHODS:
        setattr(LibvirtDriver, name, _timed(getattr(LibvirtDriver, name)))


def _prerun(task: Any = None, **_kw: Any) -> None:
    _local.counts = dict.fromkeys(FIELDS, 0.0)
    _local.sql = [] if task is not None and task.name not in first_sql else None
    _local.t0 = time.perf_counter()


def _postrun(task: Any = None, **_kw: Any) -> None:
    counts = _current()
    if counts is None or task is None:
        return
    counts["task_s"] = time.perf_counter() - _local.t0
    counts["runs"] = 1
    _local.counts = None
    sql, _local.sql = getattr(_local, "sql", None), None
    with _lock:
        if sql is not None:
            first_sql.setdefault(task.name, sql)
        for key, value in counts.items():
            totals[task.name][key] += value


def main(argv: list[str]) -> None:
    host, out = argv
    from resizeflow.worker import run

    install_counters()
    time_driver()
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    try:
        run(load().with_host(host), loglevel="WARNING", register=True)
    finally:
        Path(out).write_text(json.dumps({"totals": totals, "first_sql": first_sql}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
