"""Stores exactly as released healthfsm versions left them, from tests/fixtures/stores.

Each fixture was made by the migrations of the commit its first line names, so a test that
opens one proves that a real old store migrates, not one rebuilt from today's steps.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from store import SCHEMA_VERSION
from store.backend import Store

FIXTURES = Path(__file__).parent / "fixtures" / "stores"

SQLITE_VERSIONS = (1, 2, 3, 4, 5, 6)
"""Every schema version a released healthfsm wrote to SQLite."""

POSTGRES_VERSIONS = (3, 4, 5, 6)
"""Every schema version a released healthfsm wrote to PostgreSQL (it came with version 3)."""


def record_a_future_version(store: Store) -> None:
    """Make ``store`` look migrated by a newer healthfsm than this one."""
    with store.write() as sql:
        sql.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?, 'future', 0)",
            [SCHEMA_VERSION + 1],
        )
        if sql.dialect == "sqlite":
            sql.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")


def write_sqlite(version: int, path: Path) -> Path:
    """A SQLite store file at ``version`` with one row in each of its tables."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript((FIXTURES / f"sqlite-v{version}.sql").read_text())
    finally:
        conn.close()
    return path


def load_postgres(version: int, url: str) -> None:
    """The tables of ``version`` in the URL's default schema, with one row each."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in (FIXTURES / f"postgres-v{version}.sql").read_text().split(";\n"):
            body = "\n".join(
                line for line in statement.splitlines() if not line.startswith("--")
            ).strip()
            if body:
                conn.execute(body.encode())
