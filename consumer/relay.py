"""Publishing the outbox to ``gm:lobby_events``.

A chunk of snapshots goes out as ONE call of a small server-side script that XADDs each of
them in order. Measured here, a redis-py pipeline spends 11-20 us of client CPU per XADD
(per-command packing and reply handling), the script about 5 us per snapshot, and a chunk is
appended atomically: all of it or none.

Snapshots a batch just committed are published from memory; the table is read only for a
backlog (on start, or after Redis failed us). Each published chunk is deleted at once, so a
snapshot is published twice only if a crash falls between its XADD and that delete.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis
import sqlite_utils
from redis.commands.core import Script

from consumer.faults import FaultPoint, hit
from store import outbox
from store.database import immediate

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 1000
"""Outbox rows per script call."""

XADD_SNAPSHOTS_LUA = """
for i = 1, #ARGV, 6 do
  redis.call('XADD', KEYS[1], '*',
    'event_type', 'runtime_snapshot_update',
    'game_id', ARGV[i],
    'runtime_status', ARGV[i + 1],
    'engine_health_summary', ARGV[i + 2],
    'current_turn', ARGV[i + 3],
    'player_turn_stats', '[]',
    'occurred_at_ms', ARGV[i + 4],
    'source_entry_id', ARGV[i + 5])
end
return #ARGV / 6
"""
"""XADD one ``runtime_snapshot_update`` per 6 arguments, in order.

The field layout is the one ``consumer.codec.encode_snapshot`` documents; a test reads the
published entries back and compares them with that function's output.
"""

Pending = list[tuple[int, outbox.OutboxRow]]


def _arguments(rows: Sequence[tuple[int, outbox.OutboxRow]]) -> list[str | int]:
    args: list[str | int] = []
    for _, row in rows:
        args += (
            row.game_id,
            row.runtime_status,
            row.engine_health_summary,
            row.current_turn,
            row.occurred_at_ms,
            row.source_entry_id,
        )
    return args


class OutboxRelay:
    """Moves committed snapshots from the outbox to the lobby stream, in order, at least once."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        client: redis.Redis,
        stream: str,
        chunk: int = PUBLISH_CHUNK,
    ) -> None:
        self.db = db
        self.stream = stream
        self.chunk = chunk
        self._script: Script = client.register_script(XADD_SNAPSHOTS_LUA)
        self._from_table = True  # unknown backlog at start: read the table
        self._in_memory: Pending = []
        self.published_through = 0
        """Highest seq on the stream; rows up to it are deleted right after."""

    def committed(self, rows: Pending) -> None:
        """A batch committed these rows; publish them from memory unless a backlog comes first."""
        if not self._from_table:
            self._in_memory.extend(rows)

    def publish(self) -> int:
        """Publish every committed, unpublished snapshot; return how many went out."""
        sent = 0
        try:
            if self._from_table:
                while rows := outbox.peek(self.db.conn, self.chunk, after=self.published_through):
                    sent += self._send(rows)
                self._from_table = False
            else:
                for start in range(0, len(self._in_memory), self.chunk):
                    sent += self._send(self._in_memory[start : start + self.chunk])
        except BaseException:
            self._from_table = True  # what is left is in the table: resume from there
            raise
        finally:
            self._in_memory.clear()
        return sent

    def _send(self, rows: Pending) -> int:
        self._script(keys=[self.stream], args=_arguments(rows))
        self.published_through = rows[-1][0]
        log.debug("published %d snapshots to %s", len(rows), self.stream)
        hit(FaultPoint.AFTER_PUBLISH)
        with immediate(self.db) as conn:
            outbox.delete_through(conn, self.published_through)
        return len(rows)
