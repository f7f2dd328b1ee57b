"""Opening the database file safely and the one kind of write transaction healthfsm uses."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import sqlite_utils

from statemachine.errors import StoreBusy
from store.migrations import migrate, needs_migration

DEFAULT_BUSY_TIMEOUT_S = 10.0
"""How long a writer waits for another writer (an admin command, say) before giving up."""


def _create_private(path: Path) -> None:
    """Create the file with mode 0600 before SQLite does, so it is never world-readable."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def open_database(
    path: str | Path,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    create: bool = True,
    upgrade: bool = True,
) -> sqlite_utils.Database:
    """Open (and by default create and migrate) the healthfsm database at ``path``.

    WAL mode lets readers (``runtime show``) run while the consumer writes;
    ``synchronous=NORMAL`` is durable against process crashes, which is the fault the
    batch transaction is designed for. ``isolation_level=None`` leaves every transaction
    explicit: the consumer's batches are ``BEGIN IMMEDIATE`` blocks.
    """
    path = Path(path)
    if not create and not path.exists():
        raise FileNotFoundError(f"database {path} does not exist")
    _create_private(path)
    conn = sqlite3.connect(
        str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        if upgrade and needs_migration(db):
            with immediate(db):
                migrate(db)  # re-checks under the write lock: another process may have won
    except BaseException:
        conn.close()
        raise
    return db


def is_busy_error(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another writer."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


@contextlib.contextmanager
def immediate(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction: all of its writes commit together or not at all.

    IMMEDIATE takes the write lock up front, so a concurrent writer makes us wait (up to
    the busy timeout) at BEGIN instead of failing halfway through the batch.
    """
    conn = db.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if is_busy_error(error):
            raise StoreBusy(f"database is locked by another writer: {error}") from error
        raise
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.OperationalError as error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if is_busy_error(error):
            raise StoreBusy(f"database is locked by another writer: {error}") from error
        raise


def database_file(db: sqlite_utils.Database) -> str:
    """The file behind an open database (for a second connection to the same file)."""
    for _, name, path in db.conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(path)
    raise ValueError("no main database")
