"""The stream offset: the id of the last entry whose effects are committed, per consumer label."""

from __future__ import annotations

import sqlite3

START_ID = "0-0"
"""Where a consumer with no stored offset starts: the beginning of the stream."""


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def load(conn: sqlite3.Connection, label: str) -> str | None:
    """The stored offset for ``label``, or None when this consumer never committed."""
    row = conn.execute("SELECT entry_id FROM stream_offsets WHERE label = ?", [label]).fetchone()
    return None if row is None else str(row[0])


def save(conn: sqlite3.Connection, label: str, entry_id: str, now_ms: int) -> None:
    """Store the offset; refuses to move it backwards (that would re-apply events)."""
    current = load(conn, label)
    if current is not None and entry_id_key(entry_id) < entry_id_key(current):
        raise ValueError(f"offset for {label!r} would move backwards: {current} -> {entry_id}")
    conn.execute(
        "INSERT INTO stream_offsets (label, entry_id, updated_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (label) DO UPDATE SET entry_id = excluded.entry_id,"
        " updated_at_ms = excluded.updated_at_ms",
        [label, entry_id, now_ms],
    )


def list_all(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """Every stored offset as (label, entry_id, updated_at_ms)."""
    rows = conn.execute(
        "SELECT label, entry_id, updated_at_ms FROM stream_offsets ORDER BY label"
    ).fetchall()
    return [(str(a), str(b), int(c)) for a, b, c in rows]
