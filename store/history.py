"""What changed each record, and why: status transitions and new summaries, with entry ids.

An append-only log: each batch appends its changes (they land on the last pages, so the
write costs little) and drops the oldest rows beyond ``HISTORY_ROWS``. ``runtime history``
shows a game's newest ``HISTORY_PER_GAME`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from store.sql import Sql, append_bounded

HISTORY_ROWS = 500_000
"""Rows kept in all (about 50 MB); older ones are dropped by the batch that adds new ones."""

ADMIN_CAUSE = "admin"
"""The ``cause`` of an operator's ``set-status`` (a health event's is its event type)."""

HISTORY_PER_GAME = 50
"""Rows ``runtime history`` shows per game, newest last."""


class HistoryRow(NamedTuple):
    """One change to a record and what caused it."""

    game_id: str
    entry_id: str
    cause: str
    from_status: str
    to_status: str
    engine_health: str
    at_ms: int
    snapshot: int
    """1 when the change queued a snapshot for Game Lobby, 0 when debounce held it back."""


_COLUMNS_TYPED = [
    *((name, "text") for name in HistoryRow._fields[:6]),
    ("at_ms", "bigint"),
    ("snapshot", "bigint"),
]


def add_many(conn: Sql, rows: Sequence[HistoryRow], keep: int = HISTORY_ROWS) -> None:
    """Append rows and drop the oldest beyond ``keep`` (inside the batch's transaction)."""
    append_bounded(conn, "runtime_history", _COLUMNS_TYPED, rows, keep)


def for_game(conn: Sql, game_id: str, limit: int = HISTORY_PER_GAME) -> list[dict[str, object]]:
    """A game's newest ``limit`` changes, oldest first (a scan: an operator's query)."""
    cursor = conn.execute(
        "SELECT id, entry_id, cause, from_status, to_status, engine_health, at_ms, snapshot"
        " FROM runtime_history WHERE game_id = ? ORDER BY id DESC LIMIT ?",
        [game_id, limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor][::-1]
