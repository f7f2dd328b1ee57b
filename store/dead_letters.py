"""Dead letters: entries that were not applied, kept with the reason so nothing is lost.

The table is bounded: after each insert only the newest ``DEAD_LETTER_LIMIT`` rows stay.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import NamedTuple

DEAD_LETTER_LIMIT = 10_000
"""Rows kept; older ones are pruned in the same transaction that adds new ones."""

RAW_FIELDS_LIMIT = 4096
"""Bytes of the entry's raw fields kept per dead letter."""


class DeadLetter(NamedTuple):
    """One rejected stream entry."""

    entry_id: str
    stream: str
    reason: str
    detail: str
    fields: str
    received_at_ms: int


def raw_fields_text(fields: Mapping[bytes, bytes]) -> str:
    """The entry's fields as JSON, undecodable bytes escaped, cut to ``RAW_FIELDS_LIMIT``."""
    decoded = {
        k.decode("utf-8", "backslashreplace"): v.decode("utf-8", "backslashreplace")
        for k, v in fields.items()
    }
    text = json.dumps(decoded, ensure_ascii=False)
    encoded = text.encode("utf-8")
    if len(encoded) <= RAW_FIELDS_LIMIT:
        return text
    return encoded[: RAW_FIELDS_LIMIT - 3].decode("utf-8", "ignore") + "..."


def add_many(
    conn: sqlite3.Connection, rows: Sequence[DeadLetter], limit: int = DEAD_LETTER_LIMIT
) -> None:
    """Keep the rows and prune the oldest beyond ``limit``."""
    if not rows:
        return
    conn.executemany(
        "INSERT INTO dead_letters (entry_id, stream, reason, detail, fields, received_at_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute(
        "DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?", [limit]
    )


def count_by_reason(conn: sqlite3.Connection) -> dict[str, int]:
    """How many dead letters are kept per reason code."""
    rows = conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall()
    return {str(reason): int(n) for reason, n in rows}


def list_recent(
    conn: sqlite3.Connection, reason: str | None = None, limit: int = 50
) -> list[dict[str, object]]:
    """The newest dead letters, optionally of one reason."""
    where, params = ("WHERE reason = ?", [reason]) if reason else ("", [])
    cursor = conn.execute(
        "SELECT id, entry_id, stream, reason, detail, fields, received_at_ms FROM dead_letters"
        f" {where} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def delete_ids(conn: sqlite3.Connection, ids: Sequence[int]) -> None:
    """Forget dead letters by row id (after a successful replay)."""
    conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
