"""The stream offset: the id of the last entry whose effects are committed, per consumer label."""

from __future__ import annotations

from store.sql import Sql
from store.stream_id import START_ID, StreamId, entry_id_key

__all__ = ["START_ID", "StreamId", "entry_id_key"]


def load(conn: Sql, label: str) -> str | None:
    """The stored offset for ``label``, or None when this consumer never committed."""
    row = conn.execute("SELECT entry_id FROM stream_offsets WHERE label = ?", [label]).fetchone()
    return None if row is None else str(row[0])


def advance(conn: Sql, label: str, entry_id: str, now_ms: int, entries: int) -> None:
    """Move the label's offset forward to ``entry_id``, counting ``entries`` more read (the
    low-water mark of a label whose one partition just committed)."""
    conn.execute(
        "INSERT INTO stream_offsets (label, entry_id, updated_at_ms, entries_read)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (label) DO UPDATE SET entry_id = excluded.entry_id,"
        " updated_at_ms = excluded.updated_at_ms,"
        " entries_read = stream_offsets.entries_read + excluded.entries_read",
        [label, entry_id, now_ms, entries],
    )


def set_to(conn: Sql, label: str, entry_id: str, now_ms: int, entries_read: int = 0) -> None:
    """Put the offset anywhere, backwards included (an operator, a rewind, ``--start-from``).

    ``entries_read`` is the stream's logical position there when it is known (``end`` on
    Redis 7), else 0. A count that is too low never makes a recreated stream look like one
    that lost entries; it only makes a later gap estimate larger.
    """
    StreamId.parse(entry_id)  # validates the form
    conn.execute(
        "INSERT INTO stream_offsets (label, entry_id, updated_at_ms, entries_read)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (label) DO UPDATE SET entry_id = excluded.entry_id,"
        " updated_at_ms = excluded.updated_at_ms, entries_read = excluded.entries_read",
        [label, entry_id, now_ms, entries_read],
    )


def entries_read(conn: Sql, label: str) -> int | None:
    """How many entries this label has committed in total, or None if it never did."""
    row = conn.execute("SELECT entries_read FROM stream_offsets WHERE label = ?", [label])
    found = row.fetchone()
    return None if found is None else int(found[0])


def count(conn: Sql) -> int:
    """How many labels have a stored offset."""
    return int(conn.execute("SELECT count(*) FROM stream_offsets").fetchone()[0])


def list_all(conn: Sql) -> list[dict[str, object]]:
    """Every stored offset with its update time and entry count."""
    cursor = conn.execute(
        "SELECT label, entry_id, updated_at_ms, entries_read FROM stream_offsets ORDER BY label"
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]
