"""Which edges of the machine the suite drives end to end, measured from the stores it leaves.

Every batch and admin change counts its edges in the store's traffic table
(``store/traffic.py``), whichever process made it: a ``consume`` subprocess, the CLI in the
test's process, a ``Worker`` in a thread. So after each test that ran the real worker or
the CLI, the counts of the stores it made (the SQLite files under its ``tmp_path``, the
PostgreSQL schemas it created) are added here; a test that only calls the store or
``apply_batch`` directly is a unit test and adds nothing. ``test_edge_coverage`` runs after
every other test and names each edge of the table that no end-to-end test drove.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from pathlib import Path

import psycopg

from statemachine.edges import Edge

DRIVEN: Counter[Edge] = Counter()
"""Each edge's count over the stores of the end-to-end tests run so far in this session."""

FULL_SUITE = False
"""Whether this session collected every test module, unfiltered (set at collection)."""

_drove = False


def drove_the_real_worker() -> None:
    """Called where a test starts ``consume`` or any CLI command, or builds a ``Worker``."""
    global _drove
    _drove = True


def take_flag() -> bool:
    """Whether the test that just ended drove the real worker or CLI (and forget it)."""
    global _drove
    drove, _drove = _drove, False
    return drove


_QUERY = "SELECT trigger, from_status, outcome, sum(count) FROM {table} GROUP BY 1, 2, 3"
SQLITE_HEADER = b"SQLite format 3\x00"


def harvest_sqlite(folder: Path) -> None:
    """Add the counts of every SQLite store under ``folder`` (read-only; a file that is no
    store, or has no traffic table yet, adds nothing)."""
    for path in folder.rglob("*"):
        if not path.is_file() or path.suffix in (".wal", ".shm", ".log") or "-wal" in path.name:
            continue
        with path.open("rb") as file:
            if file.read(16) != SQLITE_HEADER:
                continue
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            try:
                rows = conn.execute(_QUERY.format(table="runtime_traffic")).fetchall()
            except sqlite3.Error:
                continue
        _add(rows)


def harvest_postgres(url: str, schemas: list[str]) -> None:
    """Add the counts of the traffic table in each of ``schemas``."""
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            try:
                rows = conn.execute(
                    _QUERY.format(table=f'"{schema}".runtime_traffic').encode()
                ).fetchall()
            except psycopg.errors.UndefinedTable:
                continue
            _add(rows)


def _add(rows: list[tuple[str, str, str, int]]) -> None:
    for trigger, from_status, outcome, n in rows:
        DRIVEN[Edge(trigger, from_status, outcome)] += int(n)
