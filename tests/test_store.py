"""The SQLite store: file safety, the contract's tables, migrations, bounded dead letters."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlite_utils

from store import SCHEMA_VERSION, dead_letters, offsets, open_database, schema_version
from store.database import immediate
from store.errors import SchemaError


def test_new_file_is_private_and_in_wal_mode(db_path: Path) -> None:
    db = open_database(db_path, create=True)
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_contract_tables_and_columns(db: sqlite_utils.Database) -> None:
    assert {"game_id", "status", "engine_health", "current_turn", "updated_at_ms"} <= set(
        db["runtime_records"].columns_dict
    )
    assert db.table("runtime_records").pks == ["game_id"]
    assert {"label", "entry_id"} <= set(db["stream_offsets"].columns_dict)
    assert db.table("stream_offsets").pks == ["label"]


def test_migrations_are_recorded_and_idempotent(db_path: Path) -> None:
    open_database(db_path, create=True).close()
    db = open_database(db_path)
    assert schema_version(db) == SCHEMA_VERSION
    assert db["schema_migrations"].count == SCHEMA_VERSION
    db.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    open_database(db_path, create=True).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaError, match="newer"):
        open_database(db_path)


def test_offset_never_moves_backwards(db: sqlite_utils.Database) -> None:
    with immediate(db) as conn:
        offsets.save(conn, "l", "10-2", 1)
        offsets.save(conn, "l", "10-10", 1)  # numeric, not string, comparison
    with pytest.raises(ValueError, match="backwards"), immediate(db) as conn:
        offsets.save(conn, "l", "9-99", 1)
    assert offsets.load(db.conn, "l") == "10-10"


def test_failed_transaction_leaves_nothing(db: sqlite_utils.Database) -> None:
    with pytest.raises(RuntimeError), immediate(db) as conn:
        offsets.save(conn, "l", "1-1", 1)
        raise RuntimeError("crash")
    assert offsets.load(db.conn, "l") is None


def test_dead_letters_are_bounded_newest_kept(db: sqlite_utils.Database) -> None:
    for batch in range(5):
        rows = [
            dead_letters.DeadLetter(f"{batch}-{i}", "s", "unknown_game", "d", "{}", 1)
            for i in range(10)
        ]
        with immediate(db) as conn:
            dead_letters.add_many(conn, rows, limit=25)
    kept = dead_letters.list_recent(db.conn, limit=100)
    assert len(kept) == 25
    assert kept[0]["entry_id"] == "4-9" and kept[-1]["entry_id"] == "2-5"
    assert {row["reason"] for row in kept} == {"unknown_game"}
