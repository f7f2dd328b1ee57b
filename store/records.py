"""Runtime records: batched load and write for the consumer, single-record admin access."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import assert_never

from statemachine import RuntimeRecord, Status
from statemachine.enums import STATUS_BY_VALUE
from store.errors import GameExists, GameNotFound, SchemaError
from store.sql import Sql
from store.stream_id import entry_id_key

_COLUMNS = (
    "game_id, status, engine_health, current_turn, updated_at_ms, last_emitted_summary,"
    " last_entry_id"
)
_CHUNK = 900
"""Game ids per ``IN (...)`` query; below SQLite's historical 999-variable limit."""


def _record(row: tuple[str, str, str, int, int, str | None, str | None]) -> RuntimeRecord:
    status = STATUS_BY_VALUE.get(row[1])
    if status is None:
        raise SchemaError(f"runtime record {row[0]!r} has an unknown status {row[1]!r}")
    return RuntimeRecord(row[0], status, row[2], row[3], row[4], row[5], row[6])


def load_many(
    conn: Sql, game_ids: Iterable[str], *, for_update: bool = False
) -> dict[str, RuntimeRecord]:
    """Load the records of ``game_ids`` that exist, a few queries per batch instead of one each.

    ``for_update`` (PostgreSQL) locks the rows until the transaction ends, in game-id order
    so that two batches, or a batch and an admin change, never wait on each other in a cycle.
    """
    ids = list(game_ids)
    found: dict[str, RuntimeRecord] = {}
    match conn.dialect:
        case "postgres":
            lock = " ORDER BY game_id" + conn.lock_for_update if for_update else ""
            sql = f"SELECT {_COLUMNS} FROM runtime_records WHERE game_id = ANY(?){lock}"
            for row in conn.execute(sql, [ids]):
                record = _record(row)
                found[record.game_id] = record
        case "sqlite":
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {_COLUMNS} FROM runtime_records WHERE game_id IN ({marks})"
                for row in conn.execute(sql, chunk):
                    record = _record(row)
                    found[record.game_id] = record
        case _:
            assert_never(conn.dialect)
    return found


def save_many(conn: Sql, records: Iterable[RuntimeRecord]) -> None:
    """Write back status, summary, time, debounce state and the last entry applied of
    already existing records."""
    rows = [
        (
            r.state._value_,  # not .value: a property, ten times the cost per record
            r.engine_health,
            r.updated_at_ms,
            r.last_emitted_summary,
            r.last_entry_id,
            r.game_id,
        )
        for r in records
    ]
    match conn.dialect:
        case "postgres":
            if rows:
                conn.execute(_SAVE_POSTGRES, [list(column) for column in zip(*rows, strict=True)])
        case "sqlite":
            conn.executemany(
                "UPDATE runtime_records SET status = ?, engine_health = ?, updated_at_ms = ?,"
                " last_emitted_summary = ?, last_entry_id = ? WHERE game_id = ?",
                rows,
            )
        case _:
            assert_never(conn.dialect)


_SAVE_POSTGRES = (
    "UPDATE runtime_records AS r SET status = v.status, engine_health = v.engine_health,"
    " updated_at_ms = v.updated_at_ms, last_emitted_summary = v.last_emitted_summary,"
    " last_entry_id = v.last_entry_id"
    " FROM unnest(?::text[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[])"
    " AS v(status, engine_health, updated_at_ms, last_emitted_summary, last_entry_id, game_id)"
    " WHERE r.game_id = v.game_id"
)
"""One statement per batch, the columns as arrays: measured against executemany in
pipeline mode and COPY in docs/performance.md."""


def insert_new(conn: Sql, game_ids: Iterable[str], status: str, now_ms: int) -> None:
    """Register many games at once (benchmarks, bulk imports); existing ids are an error."""
    conn.executemany(
        f"INSERT INTO runtime_records ({_COLUMNS}) VALUES (?, ?, '', 0, ?, NULL, NULL)",
        ((game_id, status, now_ms) for game_id in game_ids),
    )


def get(conn: Sql, game_id: str, *, for_update: bool = False) -> RuntimeRecord:
    """One record, or ``GameNotFound``; ``for_update`` locks it (PostgreSQL) until commit."""
    lock = conn.lock_for_update if for_update else ""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM runtime_records WHERE game_id = ?{lock}", [game_id]
    ).fetchone()
    if row is None:
        raise GameNotFound(f"no runtime record for game {game_id!r}")
    return _record(row)


def add(conn: Sql, record: RuntimeRecord) -> None:
    """Register a new game; ``GameExists`` if the id is taken. Call inside a write."""
    inserted = conn.execute(
        f"INSERT INTO runtime_records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (game_id) DO NOTHING",
        [
            record.game_id,
            record.state.value,
            record.engine_health,
            record.current_turn,
            record.updated_at_ms,
            record.last_emitted_summary,
            record.last_entry_id,
        ],
    )
    if inserted.rowcount != 1:
        raise GameExists(f"game {record.game_id!r} already has a runtime record")


def add_many(conn: Sql, added: Iterable[RuntimeRecord]) -> None:
    """Register new games in one statement (the caller made sure none exists)."""
    conn.executemany(
        f"INSERT INTO runtime_records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (
                r.game_id,
                r.state.value,
                r.engine_health,
                r.current_turn,
                r.updated_at_ms,
                r.last_emitted_summary,
                r.last_entry_id,
            )
            for r in added
        ),
    )


def save(conn: Sql, record: RuntimeRecord) -> None:
    """Write back one record (admin path)."""
    save_many(conn, [record])


def forget_marks(conn: Sql, after: str, keep: Callable[[str], bool] | None = None) -> int:
    """Clear the last-applied mark of records marked past ``after``, so entries after it
    apply again: an operator's or a reset's rewind means it (``offsets set``,
    ``--on-stream-reset rewind``). ``keep`` spares games that are not the caller's (other
    partitions). Returns how many marks were cleared."""
    start = entry_id_key(after)
    rows = conn.execute(
        "SELECT game_id, last_entry_id FROM runtime_records WHERE last_entry_id IS NOT NULL"
    ).fetchall()
    cleared = [
        (game_id,)
        for game_id, mark in rows
        if entry_id_key(mark) > start and (keep is None or not keep(game_id))
    ]
    conn.executemany("UPDATE runtime_records SET last_entry_id = NULL WHERE game_id = ?", cleared)
    return len(cleared)


def count(conn: Sql) -> int:
    """How many runtime records the store holds."""
    return int(conn.execute("SELECT count(*) FROM runtime_records").fetchone()[0])


def overwrite_health(conn: Sql, pairs: Iterable[tuple[str, str]]) -> None:
    """Set ``engine_health`` from (text, game id) pairs, nothing else: the write of the
    bench's bare floor (``consumer.devtools.bench``), one statement per batch."""
    conn.executemany("UPDATE runtime_records SET engine_health = ? WHERE game_id = ?", pairs)


def iter_all(conn: Sql, status: Status | None = None) -> Iterator[RuntimeRecord]:
    """Every record in game-id order, optionally of one status."""
    where, params = ("WHERE status = ?", [status.value]) if status else ("", [])
    sql = f"SELECT {_COLUMNS} FROM runtime_records {where} ORDER BY game_id"
    for row in conn.execute(sql, params).fetchall():
        yield _record(row)


def as_dict(record: RuntimeRecord) -> dict[str, object]:
    """The record as the CLI prints it, with the contract's column names."""
    return {
        "game_id": record.game_id,
        "status": record.state.value,
        "engine_health": record.engine_health,
        "current_turn": record.current_turn,
        "updated_at_ms": record.updated_at_ms,
        "last_emitted_summary": record.last_emitted_summary,
    }
