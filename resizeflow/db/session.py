"""Engines and transactions.

SQLite runs every transaction as ``BEGIN IMMEDIATE``: SQLite has no row locks,
so taking the write lock up front is what makes "re-read the rows under a lock"
hold across the worker processes that share one file. PostgreSQL uses
``SELECT ... FOR UPDATE`` on the rows a step touches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, readonly: bool = False, **kwargs: Any) -> Engine:
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, issue BEGIN (see below).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Readers take a WAL snapshot and never wait for a writer.
            conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 5)
    kwargs.setdefault("max_overflow", 10)
    return create_engine(url, **kwargs)


class Database:
    """An engine and its session factory."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = (
            make_engine(url, readonly=True, **engine_kwargs) if self.is_sqlite else self.engine
        )
        self._read_factory = sessionmaker(self._read_engine, expire_on_commit=False)
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._factory() as session, session.begin():
            yield session

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for several transactions in a row, each begun with ``session.begin()``.

        Objects stay in its identity map between them: a step that commits,
        works on the hypervisor with no transaction open, then locks its rows
        again finds the same objects, refreshed by the second lock.
        """
        with self._factory() as session:
            yield session

    @contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """A connection whose every statement commits on its own.

        On PostgreSQL this saves the BEGIN and COMMIT round trips of a
        one-statement transaction. SQLite gets an ordinary transaction, whose
        ``BEGIN IMMEDIATE`` is what orders it against the other writers.
        """
        if self.is_sqlite:
            with self.engine.begin() as conn:
                yield conn
        else:
            with self._autocommit_engine.connect() as conn:
                yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session; closing it discards whatever it changed.

        Objects read here stay usable after the block, detached.
        """
        with self._read_factory() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        self._read_engine.dispose()
