"""Throwaway PostgreSQL databases, for the benchmark's and the tests' isolated stacks.

Each is created next to an admin URL's database, under a random name, and
dropped with ``WITH (FORCE)`` so that connections a killed process left
behind cannot keep it alive.
"""

from __future__ import annotations

import uuid

from sqlalchemy import create_engine, text


def _admin(admin_url: str, sql: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(sql))
    finally:
        admin.dispose()


def create_database(admin_url: str, prefix: str) -> str:
    """Create an empty database named ``<prefix>_<random>``; returns its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url``, whoever is still connected to it."""
    name = url.rsplit("/", 1)[1]
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
