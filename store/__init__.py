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
from store.errors import StoreMissing
from store.migrations import SCHEMA_VERSION
from store.postgres import is_postgres_url, open_postgres, redact_dsn
from store.sqlite import DEFAULT_BUSY_TIMEOUT_S, open_sqlite

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "RecordLoader",
    "Store",
    "is_postgres_url",
    "migrate_database",
    "open_database",
    "shown_location",
    "store_exists",
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


def shown_location(location: str) -> str:
    """``--db`` as commands print it: a SQLite path as given, a PostgreSQL URL without its
    password."""
    return redact_dsn(location) if is_postgres_url(location) else location


def store_exists(location: str) -> bool:
    """Whether ``--db`` names a store already: the SQLite file exists, or the PostgreSQL
    schema has healthfsm's tables."""
    if not is_postgres_url(location):
        return Path(location).exists()
    try:
        open_database(location, upgrade=False).close()
    except StoreMissing:
        return False
    return True


def migrate_database(location: str) -> tuple[int, list[str]]:
    """Bring ``--db``'s schema up to date: (the version it had, the steps applied). A
    PostgreSQL schema without tables gets them; a missing SQLite file is ``StoreMissing``
    (a typo must not make an empty store)."""
    database = open_database(location, upgrade=False, create=is_postgres_url(location))
    try:
        before = database.schema_version()
        return before, database.migrate()
    finally:
        database.close()
