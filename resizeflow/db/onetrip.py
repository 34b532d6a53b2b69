"""A statement and the transaction control around it, sent to PostgreSQL as one message.

psycopg sends ``BEGIN`` and ``COMMIT`` as messages of their own, each a round
trip that waits for the server. The step runner's hot path needs neither to
wait alone: its claim commits on its own and its transaction begins right
after (``claim; COMMIT; BEGIN``), and its last statement is followed by the
commit (``finish; COMMIT``).

PostgreSQL's simple query protocol takes several statements in one message
and runs them in order, stopping at the first error. Its parameters cannot
travel apart from the text, so the statement is rendered with psycopg's
client-side quoting (``ClientCursor.mogrify``), the same quoting psycopg uses
for its client-side binding cursors.

NOTE: a ``COMMIT`` inside the message ends whatever transaction is open on
the server, whether the session knows it or not. psycopg reads the server's
transaction status from every reply and skips its own ``COMMIT`` when the
server is idle, so the session's commit that follows costs nothing. Anything
the session still had to flush would then run outside the transaction: the
callers flush first.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from psycopg import ClientCursor
from psycopg import Connection as PgConnection
from sqlalchemy import Connection, CursorResult
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import Compiled

_Processors = dict[str, Callable[[Any], Any]]

COMMIT = "COMMIT"
COMMIT_THEN_BEGIN = "COMMIT; BEGIN"


def supported(conn: Connection) -> bool:
    """Whether ``conn`` talks to PostgreSQL through psycopg 3 (SQLite does not)."""
    return isinstance(conn.connection.driver_connection, PgConnection)


@functools.cache
def _compiled(stmt: ClauseElement, dialect: Dialect) -> tuple[Compiled, _Processors]:
    # The hot path's statements are built once (functools.cache); so is their SQL.
    compiled = stmt.compile(dialect=dialect)
    processors: _Processors = {}
    for name, bind in compiled.binds.items():  # type: ignore[attr-defined]
        processor = bind.type.bind_processor(dialect)
        if processor is not None:
            processors[name] = processor
    return compiled, processors


def render(conn: Connection, stmt: ClauseElement, params: Mapping[str, Any]) -> str:
    """``stmt`` with its parameters quoted in, as psycopg would bind them client-side."""
    compiled, processors = _compiled(stmt, conn.dialect)
    values = dict(compiled.construct_params(dict(params)) or {})
    for name, processor in processors.items():
        if name in values:
            values[name] = processor(values[name])
    driver = conn.connection.driver_connection
    assert isinstance(driver, PgConnection)
    return ClientCursor(driver).mogrify(compiled.string, values)


def execute_then(
    conn: Connection, stmt: ClauseElement, params: Mapping[str, Any], then: str
) -> CursorResult[Any]:
    """Run ``stmt``, then ``then`` (``COMMIT`` or ``COMMIT; BEGIN``), in one round trip.

    The result is ``stmt``'s: psycopg's cursor stands on the message's first result.
    """
    sql = f"{render(conn, stmt, params)}; {then}"
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
