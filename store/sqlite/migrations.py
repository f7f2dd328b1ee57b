"""Ordered, recorded schema migrations.

Each migration runs once, inside the caller's transaction, and is recorded in
``schema_migrations``; ``PRAGMA user_version`` mirrors the newest applied version so a
health check can compare it without reading a table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils

from store.errors import SchemaError


def _initial(db: sqlite_utils.Database) -> None:
    db.table("runtime_records").create(
        {
            "game_id": str,
            "status": str,
            "engine_health": str,
            "current_turn": int,
            "updated_at_ms": int,
            "last_emitted_summary": str,
        },
        pk="game_id",
        not_null={"status", "engine_health", "current_turn", "updated_at_ms"},
        defaults={"engine_health": "", "current_turn": 0},
    )
    db.table("stream_offsets").create(
        {"label": str, "entry_id": str, "updated_at_ms": int},
        pk="label",
        not_null={"entry_id", "updated_at_ms"},
    )
    db.execute(
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            source_entry_id TEXT NOT NULL,
            game_id TEXT NOT NULL,
            runtime_status TEXT NOT NULL,
            engine_health_summary TEXT NOT NULL,
            current_turn INTEGER NOT NULL,
            occurred_at_ms INTEGER NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE dead_letters (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            entry_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            reason TEXT NOT NULL,
            detail TEXT NOT NULL,
            fields TEXT NOT NULL,
            received_at_ms INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX dead_letters_reason ON dead_letters (reason, id)")


def _history(db: sqlite_utils.Database) -> None:
    """An append-only log of record changes, bounded by pruning its oldest rows.

    Appends land on the last page (a per-game ring or index would dirty one scattered page
    per game and batch, which cost ~40% of the drain rate on the hard benchmark mix).
    """
    db.execute(
        """CREATE TABLE runtime_history (
            id INTEGER PRIMARY KEY,
            game_id TEXT NOT NULL,
            entry_id TEXT NOT NULL,
            cause TEXT NOT NULL,
            from_status TEXT NOT NULL,
            to_status TEXT NOT NULL,
            engine_health TEXT NOT NULL,
            at_ms INTEGER NOT NULL
        )"""
    )
    db.execute("ALTER TABLE stream_offsets ADD COLUMN entries_read INTEGER NOT NULL DEFAULT 0")


def _leases_and_replay_claims(db: sqlite_utils.Database) -> None:
    """One active worker per label (a lease with a fencing epoch), and claimed replays.

    A dead letter is claimed (``claimed_by``/``claimed_at_ms``) in a transaction before a
    replay sends it, so concurrent replays never send a row twice and a crash mid-replay
    leaves the row visibly claimed.
    """
    db.execute(
        """CREATE TABLE leases (
            label TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            node TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            acquired_at_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL
        )"""
    )
    db.execute("ALTER TABLE dead_letters ADD COLUMN claimed_by TEXT")
    db.execute("ALTER TABLE dead_letters ADD COLUMN claimed_at_ms INTEGER")


Migration = Callable[[sqlite_utils.Database], None]

MIGRATIONS: list[tuple[str, Migration]] = [
    ("initial", _initial),
    ("runtime_history_and_entries_read", _history),
    ("leases_and_replay_claims", _leases_and_replay_claims),
]
"""Append only: the position (1-based) is the schema version."""

SCHEMA_VERSION = len(MIGRATIONS)

HEALTHFSM_MARKER_TABLES = frozenset({"runtime_records", "stream_offsets", "schema_migrations"})
"""Tables every healthfsm store has since its first version: how a file is recognised."""


def schema_version(db: sqlite_utils.Database) -> int:
    """The schema version recorded in the file (0 for a new file)."""
    row = db.conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def needs_migration(db: sqlite_utils.Database) -> bool:
    """Whether the file is behind this build; ``SchemaError`` if it is ahead."""
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise SchemaError(
            f"database schema version {current} is newer than this healthfsm"
            f" understands ({SCHEMA_VERSION}); upgrade healthfsm"
        )
    return current < SCHEMA_VERSION


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration in order; return the names applied."""
    needs_migration(db)
    current = schema_version(db)
    if not db["schema_migrations"].exists():
        db.table("schema_migrations").create(
            {"version": int, "name": str, "applied_at_ms": int}, pk="version"
        )
    applied = []
    for version, (name, apply) in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        apply(db)
        db.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)",
            [version, name, int(time.time() * 1000)],
        )
        db.execute(f"PRAGMA user_version={version}")
        applied.append(name)
    return applied
