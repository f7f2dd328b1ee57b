"""SQLite persistence through sqlite-utils: records, offsets, the snapshot outbox, dead letters.

Hot-path functions take the raw connection and use ``executemany``; admin and CLI reads use
sqlite-utils queries. All writes that must commit together run inside ``immediate()``.
"""

import logging

from store.database import DEFAULT_BUSY_TIMEOUT_S, immediate, open_database
from store.migrations import SCHEMA_VERSION, schema_version

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_S",
    "SCHEMA_VERSION",
    "immediate",
    "open_database",
    "schema_version",
]
