"""Persistence behind one interface (``store.backend.Store``), on SQLite or PostgreSQL.

``open_database`` picks the backend from ``--db``: a ``postgresql://`` / ``postgres://`` URL
opens ``store.postgres``, anything else is a SQLite file (``store.sqlite``). The table
modules (records, offsets, outbox, history, dead letters, leases) take the ``Sql`` of a
transaction and work on both.
"""

from __future__ import annotations

import logging
from pathlib import Path

from store.backend import RecordLoader, Store
from store.postgres import is_postgres_url, open_postgres
from store.postgres import schema as pg_schema
from store.sqlite import DEFAULT_BUSY_TIMEOUT_S, open_sqlite
from store.sqlite import migrations as sqlite_migrations
from store.sqlite.store import SqliteStore

logging.getLogger(__name__).addHandler(logging.NullHandler())

SCHEMA_VERSION = sqlite_migrations.SCHEMA_VERSION
assert pg_schema.SCHEMA_VERSION == SCHEMA_VERSION

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "RecordLoader",
    "Store",
    "is_postgres_url",
    "migrate",
    "open_database",
    "schema_version",
]


def open_database(
    location: str | Path,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    create: bool = False,
    upgrade: bool = True,
    read_only: bool = False,
) -> Store:
    """Open the store ``--db`` names: the one way every command gets one.

    ``busy_timeout_s`` bounds every wait for another writer (SQLite's busy timeout,
    PostgreSQL's ``lock_timeout``). Only ``create`` makes a new file or new tables; a
    foreign file or table is refused untouched; ``read_only`` never writes.
    """
    if isinstance(location, str) and is_postgres_url(location):
        return open_postgres(
            location,
            lock_timeout_s=busy_timeout_s,
            create=create,
            upgrade=upgrade,
            read_only=read_only,
        )
    return open_sqlite(
        location, busy_timeout_s=busy_timeout_s, create=create, upgrade=upgrade, read_only=read_only
    )


def schema_version(store: Store) -> int:
    """The schema version the store records (0 for a new one)."""
    if isinstance(store, SqliteStore):
        return sqlite_migrations.schema_version(store.utils)
    return pg_schema.schema_version(store.conn)


def migrate(store: Store) -> list[str]:
    """Apply every pending migration in one write transaction; return the names applied."""
    if isinstance(store, SqliteStore):
        with store.write():
            return sqlite_migrations.migrate(store.utils)
    with store.write() as sql:
        return pg_schema.migrate(sql)
