"""Per-game history of what changed a record: status transitions and new summaries.

Each game has a ring of ``HISTORY_LIMIT`` slots; row number ``seq`` goes to slot
``seq % HISTORY_LIMIT``, replacing the oldest. The table is bounded per game with no pruning
pass, and a write is one keyed upsert.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

from statemachine import RuntimeRecord

HISTORY_LIMIT = 50
"""Rows kept per game."""


class HistoryRow(NamedTuple):
    """One change to a record and what caused it."""

    game_id: str
    slot: int
    seq: int
    entry_id: str
    cause: str
    from_status: str
    to_status: str
    engine_health: str
    at_ms: int


def next_row(
    record: RuntimeRecord, entry_id: str, cause: str, from_status: str, at_ms: int
) -> HistoryRow:
    """The row for a change just applied to ``record``; advances its history counter."""
    seq = record.history_seq
    record.history_seq = seq + 1
    return HistoryRow(
        record.game_id,
        seq % HISTORY_LIMIT,
        seq,
        entry_id,
        cause,
        from_status,
        record.state.value,
        record.engine_health,
        at_ms,
    )


def add_many(conn: sqlite3.Connection, rows: Sequence[HistoryRow]) -> None:
    """Write rows into their slots (call inside the transaction that saves the records)."""
    if rows:
        conn.executemany(
            "INSERT OR REPLACE INTO runtime_history (game_id, slot, seq, entry_id, cause,"
            " from_status, to_status, engine_health, at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def for_game(conn: sqlite3.Connection, game_id: str) -> list[dict[str, object]]:
    """A game's kept history, oldest first."""
    cursor = conn.execute(
        "SELECT seq, entry_id, cause, from_status, to_status, engine_health, at_ms"
        " FROM runtime_history WHERE game_id = ? ORDER BY seq",
        [game_id],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
