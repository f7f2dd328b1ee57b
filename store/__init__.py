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
from store.migrations import SCHEMA_VERSION
from store.postgres import is_postgres_url, open_postgres
from store.sqlite import DEFAULT_BUSY_TIMEOUT_S, open_sqlite

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "RecordLoader",
    "Store",
    "is_postgres_url",
    "open_database",
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
