"""Runtime records: batched load and write for the consumer, single-record admin access."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

import sqlite_utils

from statemachine import RuntimeRecord, Status
from statemachine.enums import STATUS_BY_VALUE
from statemachine.errors import GameExists, GameNotFound
from store.errors import SchemaError

_COLUMNS = "game_id, status, engine_health, current_turn, updated_at_ms, last_emitted_summary"
_CHUNK = 900
"""Game ids per ``IN (...)`` query; below SQLite's historical 999-variable limit."""


def _record(row: tuple[str, str, str, int, int, str | None]) -> RuntimeRecord:
    status = STATUS_BY_VALUE.get(row[1])
    if status is None:
        raise SchemaError(f"runtime record {row[0]!r} has an unknown status {row[1]!r}")
    return RuntimeRecord(row[0], status, row[2], row[3], row[4], row[5])


def load_many(conn: sqlite3.Connection, game_ids: Iterable[str]) -> dict[str, RuntimeRecord]:
    """Load the records of ``game_ids`` that exist, a few queries per batch instead of one each."""
    ids = list(game_ids)
    found: dict[str, RuntimeRecord] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT {_COLUMNS} FROM runtime_records WHERE game_id IN ({marks})"
        for row in conn.execute(sql, chunk):
            record = _record(row)
            found[record.game_id] = record
    return found


def save_many(conn: sqlite3.Connection, records: Iterable[RuntimeRecord]) -> None:
    """Write back status, summary, time and debounce state of already existing records."""
    conn.executemany(
        "UPDATE runtime_records SET status = ?, engine_health = ?, updated_at_ms = ?,"
        " last_emitted_summary = ? WHERE game_id = ?",
        [
            (
                r.state._value_,  # not .value: a property, ten times the cost per record
                r.engine_health,
                r.updated_at_ms,
                r.last_emitted_summary,
                r.game_id,
            )
            for r in records
        ],
    )


def insert_new(conn: sqlite3.Connection, game_ids: Iterable[str], status: str, now_ms: int) -> None:
    """Register many games at once (benchmarks, bulk imports); existing ids are an error."""
    conn.executemany(
        f"INSERT INTO runtime_records ({_COLUMNS}) VALUES (?, ?, '', 0, ?, NULL)",
        ((game_id, status, now_ms) for game_id in game_ids),
    )


def get(db: sqlite_utils.Database, game_id: str) -> RuntimeRecord:
    """One record, or ``GameNotFound``."""
    row = db.conn.execute(
        f"SELECT {_COLUMNS} FROM runtime_records WHERE game_id = ?", [game_id]
    ).fetchone()
    if row is None:
        raise GameNotFound(f"no runtime record for game {game_id!r}")
    return _record(row)


def add(db: sqlite_utils.Database, record: RuntimeRecord) -> None:
    """Register a new game; ``GameExists`` if the id is taken. Call inside ``immediate()``."""
    try:
        db.conn.execute(
            f"INSERT INTO runtime_records ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            [
                record.game_id,
                record.state.value,
                record.engine_health,
                record.current_turn,
                record.updated_at_ms,
                record.last_emitted_summary,
            ],
        )
    except sqlite3.IntegrityError as error:
        raise GameExists(f"game {record.game_id!r} already has a runtime record") from error


def save(db: sqlite_utils.Database, record: RuntimeRecord) -> None:
    """Write back one record (admin path)."""
    save_many(db.conn, [record])


def iter_all(db: sqlite_utils.Database, status: Status | None = None) -> Iterator[RuntimeRecord]:
    """Every record in game-id order, optionally of one status."""
    where, params = ("WHERE status = ?", [status.value]) if status else ("", [])
    sql = f"SELECT {_COLUMNS} FROM runtime_records {where} ORDER BY game_id"
    for row in db.conn.execute(sql, params):
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
