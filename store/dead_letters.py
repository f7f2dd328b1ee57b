"""Dead letters: entries that were not applied, kept with the reason so nothing is lost.

The table is bounded: after each insert only the newest ``DEAD_LETTER_LIMIT`` rows stay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import NamedTuple, assert_never

from store.sql import Sql, append_bounded, as_dicts

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


_COLUMNS_TYPED = [(name, "text") for name in DeadLetter._fields[:-1]] + [
    ("received_at_ms", "bigint")
]


def add_many(
    conn: Sql, rows: Sequence[DeadLetter], limit: int = DEAD_LETTER_LIMIT
) -> set[tuple[str, str]]:
    """Keep the rows and prune the oldest beyond ``limit``; return the (stream, entry id)
    pairs that were kept already.

    An entry already kept is not kept twice: after a re-partition or a takeover an entry
    may be read again by another worker, and each rejected entry is one dead letter.
    """
    kept = _already_kept(conn, rows)
    if kept:
        rows = [row for row in rows if (row.stream, row.entry_id) not in kept]
    append_bounded(conn, "dead_letters", _COLUMNS_TYPED, rows, limit)
    return kept


def _already_kept(conn: Sql, rows: Sequence[DeadLetter]) -> set[tuple[str, str]]:
    """Which of ``rows``' (stream, entry id) pairs the table holds (one indexed query)."""
    ids = sorted({row.entry_id for row in rows})
    if not ids:
        return set()
    match conn.dialect:
        case "postgres":
            cursor = conn.execute(
                "SELECT stream, entry_id FROM dead_letters WHERE entry_id = ANY(?)", [ids]
            )
            return {(str(stream), str(entry_id)) for stream, entry_id in cursor}
        case "sqlite":
            found: set[tuple[str, str]] = set()
            for start in range(0, len(ids), 900):  # below SQLite's historical 999 limit
                chunk = ids[start : start + 900]
                marks = ",".join("?" * len(chunk))
                cursor = conn.execute(
                    f"SELECT stream, entry_id FROM dead_letters WHERE entry_id IN ({marks})", chunk
                )
                found.update((str(stream), str(entry_id)) for stream, entry_id in cursor)
            return found
        case _:
            assert_never(conn.dialect)


def list_recent(conn: Sql, reason: str | None = None, limit: int = 50) -> list[dict[str, object]]:
    """The newest dead letters, optionally of one reason."""
    where, params = ("WHERE reason = ?", [reason]) if reason else ("", [])
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id DESC LIMIT ?", [*params, limit]
    )
    return as_dicts(cursor)


_COLUMNS = "id, entry_id, stream, reason, detail, fields, received_at_ms, claimed_by, claimed_at_ms"


def oldest_unclaimed(conn: Sql, reason: str | None, limit: int) -> list[dict[str, object]]:
    """The oldest ``limit`` rows no replay has claimed, optionally of one reason."""
    where = "WHERE claimed_by IS NULL" + (" AND reason = ?" if reason else "")
    params: list[object] = [reason] if reason else []
    # a concurrent replay skips the rows this one is choosing
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM dead_letters {where} ORDER BY id LIMIT ?"
        + conn.lock_skipping_locked,
        [*params, limit],
    )
    return as_dicts(cursor)


def by_ids(conn: Sql, ids: Sequence[int]) -> list[dict[str, object]]:
    """These rows (claimed or not), oldest first; ids that do not exist are left out."""
    found: list[dict[str, object]] = []
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        cursor = conn.execute(
            f"SELECT {_COLUMNS} FROM dead_letters WHERE id IN ({marks}){conn.lock_for_update}",
            chunk,
        )
        found += as_dicts(cursor)
    return sorted(found, key=lambda row: int(str(row["id"])))


def claim(conn: Sql, ids: Sequence[int], claimer: str, now_ms: int) -> None:
    """Mark rows as being replayed by ``claimer`` (in the transaction that chose them)."""
    conn.executemany(
        "UPDATE dead_letters SET claimed_by = ?, claimed_at_ms = ? WHERE id = ?",
        [(claimer, now_ms, i) for i in ids],
    )


def unclaim(conn: Sql, ids: Sequence[int], claimer: str) -> None:
    """Give rows back (Redis refused them): the next replay may pick them again."""
    conn.executemany(
        "UPDATE dead_letters SET claimed_by = NULL, claimed_at_ms = NULL"
        " WHERE id = ? AND claimed_by = ?",
        [(i, claimer) for i in ids],
    )


def delete_claimed(conn: Sql, ids: Sequence[int], claimer: str) -> None:
    """Forget replayed rows, only while ``claimer`` still holds their claim."""
    conn.executemany(
        "DELETE FROM dead_letters WHERE id = ? AND claimed_by = ?", [(i, claimer) for i in ids]
    )
