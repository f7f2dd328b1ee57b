"""Opening a SQLite store file safely: created private, foreign files refused, the connection
set up (WAL, busy timeout, read-only when asked) and the schema checked before use."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import sqlite_utils

from store.errors import NotAStore, SchemaError, StoreError, StoreMissing
from store.migrations import MARKER_TABLES, SCHEMA_VERSION, needs_migration
from store.sqlite.store import SqliteStore

DEFAULT_BUSY_TIMEOUT_S = 10.0
"""How long a writer waits for another writer (an admin command, say) before giving up."""


def _create_private(path: Path) -> None:
    """Create the file with mode 0600 before SQLite does, so it is never world-readable.

    Never creates folders: a typo in ``--db`` must fail, not grow a tree.
    """
    if not path.parent.is_dir():
        raise StoreMissing(f"cannot create database {path}: folder {path.parent} does not exist")
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def _missing(path: Path) -> StoreMissing:
    return StoreMissing(
        f"database {path} does not exist (create it with 'healthfsm init --db {path}'"
        " or 'healthfsm runtime add GAME_ID --db ...')"
    )


def _refuse_foreign(db: sqlite_utils.Database, path: Path) -> bool:
    """``NotAStore`` for a file that holds someone else's tables; whether it holds ours.

    Runs before anything writes (no WAL switch, no migration), so a foreign file is left
    byte-for-byte as it was.
    """
    tables = {name for name in db.table_names() if not name.startswith("sqlite_")}
    if not tables:
        return False
    if not tables >= MARKER_TABLES:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise NotAStore(
            f"{path} is not a healthfsm store (it holds other tables: {shown});"
            " refusing to touch it"
        )
    return True


def _connect(path: Path, busy_timeout_s: float, read_only: bool) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if read_only else 'rw'}"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        return conn
    except sqlite3.Error as error:
        raise StoreError(f"cannot open database {path}: {error}") from error


def open_sqlite(
    path: str | Path,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    create: bool = False,
    upgrade: bool = True,
    read_only: bool = False,
) -> SqliteStore:
    """Open the healthfsm database file at ``path``.

    - Only ``create=True`` (``runtime add``, ``init``, the demo) makes a new file; every
      other caller gets ``StoreMissing`` naming the path.
    - A file holding tables that are not healthfsm's is refused (``NotAStore``) untouched.
    - ``read_only`` opens with SQLite's ``mode=ro``: nothing is written, not even the WAL
      switch, and an out-of-date schema is a ``SchemaError`` saying how to migrate.
    - Otherwise the file is switched to WAL and (with ``upgrade``) migrated; without
      ``upgrade`` it is left at its version (``healthfsm migrate`` reports the step).

    WAL mode lets readers (``runtime show``) run while the consumer writes;
    ``synchronous=NORMAL`` is durable against process crashes, which is the fault the
    batch transaction is designed for. ``isolation_level=None`` leaves every transaction
    explicit: the consumer's batches are ``BEGIN IMMEDIATE`` blocks.
    """
    path = Path(path)
    if not path.exists():
        if not create or read_only:
            raise _missing(path)
        _create_private(path)
    conn = _connect(path, busy_timeout_s, read_only)
    try:
        db = sqlite_utils.Database(conn, execute_plugins=False)
        try:
            ours = _refuse_foreign(db, path)
        except sqlite3.DatabaseError as error:
            raise NotAStore(f"{path} is not a healthfsm store: {error}") from error
        if not ours and not create:
            raise (
                _missing(path)
                if read_only
                else NotAStore(
                    f"{path} is not a healthfsm store yet (no tables); create one with"
                    f" 'healthfsm init --db {path}'"
                )
            )
        store = SqliteStore(db, str(path))
        if read_only:
            _require_current(store, path)
            return store
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if upgrade and needs_migration(store.conn):
            store.migrate()
    except BaseException:
        conn.close()
        raise
    return store


def _require_current(store: SqliteStore, path: Path) -> None:
    if needs_migration(store.conn):
        raise SchemaError(
            f"database {path} has schema version {store.schema_version()}, this healthfsm needs"
            f" {SCHEMA_VERSION}; upgrade it with 'healthfsm migrate --db {path}'"
        )
