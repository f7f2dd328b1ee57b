"""The snapshot outbox: snapshots commit with the batch that caused them, publish after.

Rows are published in ``seq`` order and deleted only once Redis has accepted them, so a
crash can duplicate a snapshot (consumers drop it by ``source_entry_id``) but never lose one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple


class OutboxRow(NamedTuple):
    """One pending ``runtime_snapshot_update``: the record as it was right after the event."""

    source_entry_id: str
    game_id: str
    runtime_status: str
    engine_health_summary: str
    current_turn: int
    occurred_at_ms: int


def enqueue(conn: sqlite3.Connection, rows: Sequence[OutboxRow]) -> list[tuple[int, OutboxRow]]:
    """Append snapshots in the order of the events that caused them; return them with seqs.

    Call inside the batch transaction: one writer, so the new sequence numbers are the
    contiguous range ending at ``last_insert_rowid()``.
    """
    if not rows:
        return []
    conn.executemany(
        "INSERT INTO outbox (source_entry_id, game_id, runtime_status, engine_health_summary,"
        " current_turn, occurred_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
    return list(zip(range(last - len(rows) + 1, last + 1), rows, strict=True))


def peek(conn: sqlite3.Connection, limit: int, after: int = 0) -> list[tuple[int, OutboxRow]]:
    """The oldest ``limit`` rows with a sequence number above ``after``, with their seqs."""
    cursor = conn.execute(
        "SELECT seq, source_entry_id, game_id, runtime_status, engine_health_summary,"
        " current_turn, occurred_at_ms FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        [after, limit],
    )
    return [(row[0], OutboxRow(*row[1:])) for row in cursor]


def delete_through(conn: sqlite3.Connection, seq: int) -> None:
    """Forget every row up to and including ``seq`` (they are on the stream now)."""
    conn.execute("DELETE FROM outbox WHERE seq <= ?", [seq])


def set_source(conn: sqlite3.Connection, seq: int, source_entry_id: str) -> None:
    """Name a row's source once its sequence number is known (admin changes)."""
    conn.execute("UPDATE outbox SET source_entry_id = ? WHERE seq = ?", [source_entry_id, seq])


def delete_seqs(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    """Forget exactly these rows (Redis accepted them, but refused others of their chunk)."""
    conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs])


def last_seq(conn: sqlite3.Connection) -> int:
    """The highest sequence number ever given out (0 before the first row)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return 0 if row is None else int(row[0])


def pending(conn: sqlite3.Connection) -> int:
    """How many snapshots wait to be published."""
    return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
