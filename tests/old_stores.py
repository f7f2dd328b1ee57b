"""Stores exactly as released healthfsm versions left them, from tests/fixtures/stores.

Each fixture was made by the migrations of the commit its first line names, so a test that
opens one proves that a real old store migrates, not one rebuilt from today's steps.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

FIXTURES = Path(__file__).parent / "fixtures" / "stores"

SQLITE_VERSIONS = (1, 2, 3)
"""Every schema version a released healthfsm wrote to SQLite."""

POSTGRES_VERSIONS = (3,)
"""Every schema version a released healthfsm wrote to PostgreSQL (it came with version 3)."""


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
