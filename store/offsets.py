"""The stream offset: the id of the last entry whose effects are committed, per consumer label."""

from __future__ import annotations

import sqlite3

START_ID = "0-0"
"""Where a consumer with no stored offset starts: the beginning of the stream."""


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Stream ids compare as (milliseconds, sequence), not as strings. ``ValueError`` if bad."""
    ms, _, seq = entry_id.partition("-")
    if not ms.isdigit() or (seq and not seq.isdigit()):
        raise ValueError(f"{entry_id!r} is not a stream entry id (like 1700000000000-0)")
    return int(ms), int(seq or 0)


def load(conn: sqlite3.Connection, label: str) -> str | None:
    """The stored offset for ``label``, or None when this consumer never committed."""
    row = conn.execute("SELECT entry_id FROM stream_offsets WHERE label = ?", [label]).fetchone()
    return None if row is None else str(row[0])


def save(
    conn: sqlite3.Connection, label: str, entry_id: str, now_ms: int, entries: int = 0
) -> None:
    """Store the offset and count ``entries`` more read; refuses to move it backwards."""
    current = load(conn, label)
    if current is not None and entry_id_key(entry_id) < entry_id_key(current):
        raise ValueError(f"offset for {label!r} would move backwards: {current} -> {entry_id}")
    conn.execute(
        "INSERT INTO stream_offsets (label, entry_id, updated_at_ms, entries_read)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (label) DO UPDATE SET entry_id = excluded.entry_id,"
        " updated_at_ms = excluded.updated_at_ms,"
        " entries_read = stream_offsets.entries_read + excluded.entries_read",
        [label, entry_id, now_ms, entries],
    )


def set_to(conn: sqlite3.Connection, label: str, entry_id: str, now_ms: int) -> None:
    """Operator override: put the offset anywhere, backwards included (replays what follows)."""
    entry_id_key(entry_id)  # validates the form
    conn.execute(
        "INSERT INTO stream_offsets (label, entry_id, updated_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (label) DO UPDATE SET entry_id = excluded.entry_id,"
        " updated_at_ms = excluded.updated_at_ms",
        [label, entry_id, now_ms],
    )


def entries_read(conn: sqlite3.Connection, label: str) -> int | None:
    """How many entries this label has committed in total, or None if it never did."""
    row = conn.execute("SELECT entries_read FROM stream_offsets WHERE label = ?", [label])
    found = row.fetchone()
    return None if found is None else int(found[0])


def list_all(conn: sqlite3.Connection) -> list[dict[str, object]]:
    """Every stored offset with its update time and entry count."""
    cursor = conn.execute(
        "SELECT label, entry_id, updated_at_ms, entries_read FROM stream_offsets ORDER BY label"
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
