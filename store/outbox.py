"""The snapshot outbox: snapshots commit with the batch that caused them, publish after.

Rows are published in ``seq`` order and deleted only once Redis has accepted them, so a
crash can duplicate a snapshot (consumers drop it by ``source_entry_id``) but never lose one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple, assert_never

from store.sql import Sql, insert_unnest


class OutboxRow(NamedTuple):
    """One pending ``runtime_snapshot_update``: the record as it was right after the event."""

    source_entry_id: str
    game_id: str
    runtime_status: str
    engine_health_summary: str
    current_turn: int
    occurred_at_ms: int


def enqueue(conn: Sql, rows: Sequence[OutboxRow]) -> list[tuple[int, OutboxRow]]:
    """Append snapshots in the order of the events that caused them; return them with seqs.

    Call inside the batch transaction. Sequence numbers must grow in commit order (the relay
    publishes in ``seq`` order and deletes confirmed rows up to a seq), so writers of the
    outbox take turns: SQLite's write lock does that; on PostgreSQL the table is locked
    against other writers (readers go on) until the transaction ends.
    """
    if not rows:
        return []
    match conn.dialect:
        case "postgres":
            return _enqueue_postgres(conn, rows)
        case "sqlite":
            conn.executemany(
                "INSERT INTO outbox (source_entry_id, game_id, runtime_status,"
                " engine_health_summary, current_turn, occurred_at_ms) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            last = int(conn.execute("SELECT last_insert_rowid()").fetchone()[0])
            return list(zip(range(last - len(rows) + 1, last + 1), rows, strict=True))
        case _:
            assert_never(conn.dialect)


_POSTGRES_COLUMNS = [
    ("source_entry_id", "text"),
    ("game_id", "text"),
    ("runtime_status", "text"),
    ("engine_health_summary", "text"),
    ("current_turn", "bigint"),
    ("occurred_at_ms", "bigint"),
]


def _enqueue_postgres(conn: Sql, rows: Sequence[OutboxRow]) -> list[tuple[int, OutboxRow]]:
    conn.execute("LOCK TABLE outbox IN EXCLUSIVE MODE")
    cursor = insert_unnest(conn, "outbox", _POSTGRES_COLUMNS, rows, returning="seq")
    seqs = sorted(int(row[0]) for row in cursor)
    return list(zip(seqs, rows, strict=True))


def peek(conn: Sql, limit: int, after: int = 0) -> list[tuple[int, OutboxRow]]:
    """The oldest ``limit`` rows with a sequence number above ``after``, with their seqs."""
    cursor = conn.execute(
        "SELECT seq, source_entry_id, game_id, runtime_status, engine_health_summary,"
        " current_turn, occurred_at_ms FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        [after, limit],
    )
    return [(row[0], OutboxRow(*row[1:])) for row in cursor]


def delete_through(conn: Sql, seq: int) -> None:
    """Forget every row up to and including ``seq`` (they are on the stream now)."""
    conn.execute("DELETE FROM outbox WHERE seq <= ?", [seq])


def set_source(conn: Sql, seq: int, source_entry_id: str) -> None:
    """Name a row's source once its sequence number is known (admin changes)."""
    conn.execute("UPDATE outbox SET source_entry_id = ? WHERE seq = ?", [source_entry_id, seq])


def delete_seqs(conn: Sql, seqs: Sequence[int]) -> None:
    """Forget exactly these rows (Redis accepted them, but refused others of their chunk;
    or other partitions' rows sit in between), in one statement."""
    if not seqs:
        return
    match conn.dialect:
        case "postgres":
            conn.execute("DELETE FROM outbox WHERE seq = ANY(?)", [list(seqs)])
        case "sqlite":
            conn.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                [json.dumps(list(seqs))],
            )
        case _:
            assert_never(conn.dialect)


def publisher_id(conn: Sql) -> str:
    """This store's identity (``store_identity``): Redis keeps each game's last appended
    outbox seq under it, because seqs are this store's own (a new store starts again at 1)."""
    return str(conn.execute("SELECT id FROM store_identity").fetchone()[0])


def last_seq(conn: Sql) -> int:
    """The highest sequence number given out (SQLite), or still in the table (PostgreSQL).

    The relay asks whether rows above the last one it knows appeared; both answer that.
    """
    match conn.dialect:
        case "postgres":  # the identity's last value needs a grant on it: use the rows
            return int(conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0])
        case "sqlite":
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            return 0 if row is None else int(row[0])
        case _:
            assert_never(conn.dialect)


def pending(conn: Sql) -> int:
    """How many snapshots wait to be published."""
    return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
