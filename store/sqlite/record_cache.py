"""Runtime records kept in memory between batches, trusted only while nobody else wrote.

SQLite's ``PRAGMA data_version`` changes exactly when another connection commits (an admin
``set-status``, a ``runtime add``). Read under the batch's write lock it tells whether the
copies this process committed are still the truth; if not, the cache starts over. Misses
always go to the database, so a game registered a second ago is found.
"""

from __future__ import annotations

from collections.abc import Iterable

from statemachine import RuntimeRecord
from store import records
from store.sql import Sql

DEFAULT_CAPACITY = 50_000
"""Records kept at most (about 10 MB); past it the cache starts over, so memory stays flat."""


class RecordCache:
    """A bounded map of game id to the record as last committed by this connection."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._records: dict[str, RuntimeRecord] = {}
        self._version: int | None = None

    def load(self, conn: Sql, game_ids: Iterable[str]) -> dict[str, RuntimeRecord]:
        """The existing records among ``game_ids``. Call inside the batch's write transaction."""
        version = int(conn.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._records.clear()
            self._version = version
        cached = self._records
        found: dict[str, RuntimeRecord] = {}
        missing: list[str] = []
        for game_id in game_ids:
            record = cached.get(game_id)
            if record is None:
                missing.append(game_id)
            else:
                found[game_id] = record
        if missing:
            found.update(records.load_many(conn, missing))
        return found

    def committed(self, touched: Iterable[RuntimeRecord]) -> None:
        """These records are now in the database exactly as they are in memory."""
        cached = self._records
        for record in touched:
            if len(cached) >= self.capacity and record.game_id not in cached:
                cached.clear()
            cached[record.game_id] = record

    def invalidate(self) -> None:
        """Forget everything: a batch failed after its records were changed in memory."""
        self._records.clear()
        self._version = None
