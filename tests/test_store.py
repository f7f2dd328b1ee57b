"""The store on both backends: file safety (SQLite), tables, migrations, bounded dead letters."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from store import SCHEMA_VERSION, Store, dead_letters, offsets, open_database, partitions
from store.errors import SchemaError, StoreError
from tests import old_stores

pytestmark = pytest.mark.backends("sqlite", "postgres")


@pytest.mark.sqlite_only
def test_new_file_is_private_and_in_wal_mode(db_path: Path) -> None:
    db = open_database(db_path, create=True)
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def _columns(db: Store, table: str) -> dict[str, str]:
    """Column name -> declared type, from each backend's own catalogue."""
    if db.dialect == "sqlite":
        rows = db.conn.execute(f"SELECT name, type FROM pragma_table_info('{table}')")
    else:
        rows = db.conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            [table],
        )
    return {str(name): str(kind).lower() for name, kind in rows}


def _primary_key(db: Store, table: str) -> list[str]:
    if db.dialect == "sqlite":
        rows = db.conn.execute(f"SELECT name FROM pragma_table_info('{table}') WHERE pk > 0")
    else:
        rows = db.conn.execute(
            "SELECT k.column_name FROM information_schema.table_constraints c"
            " JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)"
            " WHERE c.table_schema = current_schema() AND c.table_name = ?"
            " AND c.constraint_type = 'PRIMARY KEY'",
            [table],
        )
    return [str(name) for (name,) in rows]


def test_contract_tables_and_columns(db: Store) -> None:
    text, integer = ("text", "integer") if db.dialect == "sqlite" else ("text", "bigint")
    records = _columns(db, "runtime_records")
    assert {
        "game_id": text,
        "status": text,
        "engine_health": text,
        "current_turn": integer,
        "updated_at_ms": integer,
    }.items() <= records.items()
    assert _primary_key(db, "runtime_records") == ["game_id"]
    assert {"label": text, "entry_id": text}.items() <= _columns(db, "stream_offsets").items()
    assert _primary_key(db, "stream_offsets") == ["label"]


def test_migrations_are_recorded_and_idempotent(db_location: str) -> None:
    open_database(db_location, create=True).close()
    db = open_database(db_location)
    assert db.schema_version() == SCHEMA_VERSION
    count = db.conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
    assert count == SCHEMA_VERSION
    db.close()


def test_newer_schema_is_refused(db_location: str) -> None:
    db = open_database(db_location, create=True)
    old_stores.record_a_future_version(db)
    db.close()
    with pytest.raises(SchemaError, match="newer"):
        open_database(db_location)


def test_offset_never_moves_backwards(db: Store) -> None:
    from consumer.runtime.offset_book import HeldOffsets

    book = HeldOffsets("l", lambda _: True)
    book.at = {0: "10-2", 1: "10-10"}
    with db.write() as conn:
        book.save(conn, "10-9", 1, 1)  # numeric, not string, comparison: 10-9 < 10-10
    assert book.at == {0: "10-9", 1: "10-10"}
    with db.write() as conn:
        book.save(conn, "9-99", 1, 1)
    assert book.at == {0: "10-9", 1: "10-10"}
    stored = partitions.load_offsets(db.conn, "l")
    assert [o.entry_id for o in stored.values()] == ["10-9"]
    assert offsets.load(db.conn, "l") == "10-9"  # the low-water mark


def test_failed_transaction_leaves_nothing(db: Store) -> None:
    with pytest.raises(RuntimeError), db.write() as conn:
        offsets.set_to(conn, "l", "1-1", 1)
        raise RuntimeError("crash")
    assert offsets.load(db.conn, "l") is None


def test_dead_letters_are_bounded_newest_kept(db: Store) -> None:
    for batch in range(5):
        rows = [
            dead_letters.DeadLetter(f"{batch}-{i}", "s", "unknown_game", "d", "{}", 1)
            for i in range(10)
        ]
        with db.write() as conn:
            dead_letters.add_many(conn, rows, limit=25)
    kept = dead_letters.list_recent(db.conn, limit=100)
    assert len(kept) == 25
    assert kept[0]["entry_id"] == "4-9" and kept[-1]["entry_id"] == "2-5"
    assert {row["reason"] for row in kept} == {"unknown_game"}


@pytest.mark.sqlite_only
def test_a_write_sqlite_refuses_names_the_database(db: Store, db_path: Path) -> None:
    """``attempt to write a readonly database`` alone does not say which file (a read-only
    file as a non-root user; ``query_only`` refuses writes the same way, even as root)."""
    db.conn.execute("PRAGMA query_only = ON")
    refused = f"database {db_path}: attempt to write a readonly"
    with pytest.raises(StoreError, match=refused), db.write() as conn:
        offsets.set_to(conn, "l", "1-1", 1)


def test_a_driver_error_on_a_read_is_the_store_s_own_and_names_the_database(db: Store) -> None:
    """Reads outside a transaction too: nothing above the store catches a driver's errors
    (``tests/test_layers.py``), so one that escaped would be a traceback."""
    with pytest.raises(StoreError, match=f"{re.escape(db.location)}.*no_such_table"):
        db.conn.execute("SELECT * FROM no_such_table")
