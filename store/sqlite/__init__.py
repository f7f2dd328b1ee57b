"""The embedded backend: one SQLite file in WAL mode, written through sqlite-utils' connection."""

from store.sqlite.database import DEFAULT_BUSY_TIMEOUT_S, open_sqlite
from store.sqlite.store import SqliteStore

__all__ = ["DEFAULT_BUSY_TIMEOUT_S", "SqliteStore", "open_sqlite"]
