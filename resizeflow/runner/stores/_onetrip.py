"""Statements and the transaction control around them, sent to PostgreSQL as one message.

Private to :class:`~resizeflow.runner.stores.postgresql.PostgresStore`.
psycopg sends ``BEGIN`` and ``COMMIT`` as messages of their own, each a round
trip that waits for the server, and the step runner's hot path needs none
of them to wait alone:

- a step's claim commits on its own, then its transaction begins and locks
  the rows: ``claim; COMMIT; BEGIN; SELECT ... FOR UPDATE`` (the claim, its
  COMMIT and the BEGIN are the :class:`Prefix` of the ORM's lock statement);
- a transaction that starts with a lock: ``SELECT ... FOR UPDATE; BEGIN``
  (:data:`THEN`; the server makes the statement's row locks part of the
  transaction that BEGIN opens);
- a step's last writes and its commit: ``UPDATE ...; finish; COMMIT``
  (:func:`flush_then`).

PostgreSQL's simple query protocol takes several statements in one message
and runs them in order, stopping at the first error. Its parameters cannot
travel apart from the text, so the statement is rendered with psycopg's
client-side quoting (``ClientCursor.mogrify``), the same quoting psycopg uses
for its client-side binding cursors.

The session's pending changes go in the same message when they are only
changed columns of rows it has loaded (:func:`flush_then`): each becomes an
``UPDATE`` by primary key, as the ORM's flush would write it, and the session
then counts them as flushed. Anything else (new or deleted objects) is
flushed by the ORM first, in round trips of its own.

NOTE: a ``COMMIT`` inside the message ends whatever transaction is open on
the server, whether the session knows it or not. psycopg reads the server's
transaction status from every reply and skips its own ``COMMIT`` when the
server is idle, so the session's commit that follows costs nothing. Anything
the session still had to flush would then run outside the transaction: that
is why :func:`flush_then` leaves nothing unflushed.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import ClientCursor
from psycopg import Connection as PgConnection
from sqlalchemy import (
    Column,
    Connection,
    CursorResult,
    Engine,
    Table,
    bindparam,
    event,
    inspect,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import Compiled

_Processors = dict[str, Callable[[Any], Any]]
Statement = tuple[ClauseElement, Mapping[str, Any]]

COMMIT = "COMMIT"
BEGIN = "BEGIN"

# Execution option: SQL to send after the statement, in the same message.
THEN = "resizeflow_then"
# Execution option: a Prefix, sent before the statement in the same message.
BEFORE = "resizeflow_before"


@dataclass
class Prefix:
    """Statements sent ahead of a statement the ORM runs, in the same message.

    The server answers each statement of ``sql`` with a result of its own,
    ahead of the one the ORM reads. The first one's rows (a claim's
    ``RETURNING``) are kept in ``rows`` once the message has run; the results
    after it (a ``COMMIT``, a ``BEGIN``) carry none and are stepped over, one
    per statement, so that the ORM reads its own statement's result.
    """

    sql: tuple[str, ...]
    rows: list[Any] = field(default_factory=list)


_installed: weakref.WeakSet[Engine] = weakref.WeakSet()
_installing = threading.Lock()


def install(engine: Engine) -> None:
    """Let ``engine``'s statements carry :data:`THEN` and :data:`BEFORE`; once per engine.

    Used for a statement whose result the ORM reads (the step's lock): the
    parameters SQLAlchemy has already bound are quoted into the text, and
    psycopg, given none, sends the whole as one simple-query message.
    """
    if engine in _installed:
        return
    with _installing:
        if engine not in _installed:
            event.listen(engine, "before_cursor_execute", _one_message, retval=True)
            event.listen(engine, "after_cursor_execute", _past_prefix)
            _installed.add(engine)


def _one_message(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    options = context.execution_options if context is not None else {}
    then, before = options.get(THEN), options.get(BEFORE)
    if not then and not before:
        return statement, parameters
    assert not executemany, "a statement sent with others runs once"
    sql = [_mogrify(conn, statement, parameters or None)]
    if before:
        sql[:0] = before.sql
    if then:
        sql.append(then)
    return "; ".join(sql), None


def _past_prefix(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    before = context.execution_options.get(BEFORE) if context is not None else None
    if not before:
        return
    before.rows = cursor.fetchall()
    for _ in before.sql:
        cursor.nextset()


def unmanaged(session: Session) -> Connection:
    """``session``'s connection for its next transaction, in autocommit mode.

    psycopg then sends no ``BEGIN`` of its own: the store sends it, in the
    same message as a statement before it, and the session's commit or
    rollback ends whatever the server has open. The pool gives the
    connection back its usual mode when it is returned.
    """
    return session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@functools.cache
def _compiled(stmt: ClauseElement, dialect: Dialect) -> tuple[Compiled, _Processors]:
    # The hot path's statements are built once (functools.cache); so is their SQL.
    compiled = stmt.compile(dialect=dialect)
    processors: _Processors = {}
    for name, bind in compiled.binds.items():  # type: ignore[attr-defined]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
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
    return _mogrify(conn, compiled.string, values)


def _mogrify(conn: Connection, sql: str, params: Any) -> str:
    """``sql`` with ``params`` quoted in by psycopg's client-side binding."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, PgConnection)
    return ClientCursor(driver).mogrify(sql, params)


def _send(conn: Connection, statements: Sequence[Statement], then: str) -> CursorResult[Any]:
    sql = "; ".join([*(render(conn, stmt, params) for stmt, params in statements), then])
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


@functools.cache
def _update_statement(table: Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> Any:
    """``UPDATE table SET columns WHERE keys``, bound as ``v_<column>`` and ``k_<key>``."""
    return (
        update(table)
        .where(*(table.c[k] == bindparam(f"k_{k}", type_=table.c[k].type) for k in keys))
        .values({c: bindparam(f"v_{c}", type_=table.c[c].type) for c in columns})
    )


def _updates(session: Session) -> tuple[list[Statement], list[tuple[Any, str, Any]]] | None:
    """The session's pending changes as UPDATE statements, with the (object,
    attribute, value) triples they write; None when only the ORM can flush them."""
    if session.new or session.deleted:
        return None
    statements: list[Statement] = []
    written: list[tuple[Any, str, Any]] = []
    for obj in session.dirty:
        state = inspect(obj)
        mapper = state.mapper
        changed: dict[Column[Any], tuple[str, Any]] = {}
        for prop in mapper.column_attrs:
            added = state.attrs[prop.key].history.added
            if added:
                changed[prop.columns[0]] = (prop.key, added[0])
        if not changed:
            continue
        table = mapper.local_table
        if not isinstance(table, Table) or len(mapper.column_attrs) != len(table.c):
            return None
        for prop in mapper.column_attrs:
            col = prop.columns[0]
            default = col.onupdate
            if default is None or col in changed:
                continue
            if not default.is_callable and not default.is_scalar:
                return None  # a SQL expression: the ORM's to render
            arg: Any = default.arg
            changed[col] = (prop.key, arg(None) if default.is_callable else arg)
        keys = mapper.primary_key_from_instance(obj)
        pk = tuple(c.key for c in mapper.primary_key)
        params = {f"k_{k}": v for k, v in zip(pk, keys, strict=True)}
        params.update({f"v_{c.key}": value for c, (_, value) in changed.items()})
        columns = tuple(sorted(c.key for c in changed))
        statements.append((_update_statement(table, pk, columns), params))
        written += [(obj, key, value) for key, value in changed.values()]
    return statements, written


def flush_then(session: Session, statements: Sequence[Statement], then: str) -> None:
    """Flush ``session``, run ``statements``, then ``then`` (``COMMIT``), in one
    round trip when the flush is only changed columns of loaded rows.

    Otherwise the ORM flushes first, and the rest follows in one round trip.
    """
    conn = session.connection()
    pending = _updates(session)
    if pending is None:
        session.flush()
        pending = [], []
    updates, written = pending
    _send(conn, [*updates, *statements], then)
    # NOTE: the UPDATEs wrote exactly these values: the ORM takes them as its
    # rows' state, with nothing left to flush. The rows are the step's, locked
    # by it, so the ORM's rowcount check has nothing to catch here.
    for obj, key, value in written:
        set_committed_value(obj, key, value)
