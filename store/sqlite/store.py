"""``Store`` on one SQLite file: IMMEDIATE transactions, a record cache, WAL checkpoints."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlite_utils

from store import migrations
from store.errors import StoreBusy, StoreError
from store.sql import Cursor, Dialect
from store.sqlite.checkpointer import Checkpointer
from store.sqlite.record_cache import RecordCache


def is_busy_error(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite gave up waiting for another writer."""
    text = str(error).lower()
    return "locked" in text or "busy" in text


def translate(error: sqlite3.Error, path: str) -> StoreError:
    """The store error for a driver error, naming the file (``attempt to write a readonly
    database`` alone does not say which): ``StoreBusy`` when another writer kept it locked."""
    if isinstance(error, sqlite3.OperationalError) and is_busy_error(error):
        return StoreBusy(f"database {path} is locked by another writer: {error}")
    return StoreError(f"database {path}: {error}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One ``BEGIN IMMEDIATE`` transaction: all of its writes commit together or not at all.

    IMMEDIATE takes the write lock up front, so a concurrent writer makes us wait (up to
    the busy timeout) at BEGIN instead of failing halfway through the batch.
    """
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


class SqliteSql:
    """``Sql`` over a ``sqlite3.Connection``: the table modules' ``?`` is SQLite's own, and
    driver errors surface as the store's errors."""

    dialect: Dialect = "sqlite"
    lock_for_update = ""
    lock_skipping_locked = ""
    """No row locks: a write transaction (``BEGIN IMMEDIATE``) holds the whole file."""

    def __init__(self, raw: sqlite3.Connection, path: str) -> None:
        self.raw = raw
        self.path = path

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        try:
            return self.raw.execute(sql, params)
        except sqlite3.Error as error:
            raise translate(error, self.path) from error

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.raw.executemany(sql, rows)
        except sqlite3.Error as error:
            raise translate(error, self.path) from error


class SqliteStore:
    """An open store file. ``utils`` is the sqlite-utils view of the same connection."""

    dialect: Dialect = "sqlite"

    def __init__(self, utils: sqlite_utils.Database, path: str) -> None:
        self.utils = utils
        self.raw: sqlite3.Connection = utils.conn
        self.path = path
        self._sql = SqliteSql(self.raw, path)

    @property
    def location(self) -> str:
        return self.path

    @property
    def conn(self) -> SqliteSql:
        return self._sql

    @contextlib.contextmanager
    def write(self) -> Iterator[SqliteSql]:
        """One write transaction; a driver error other than a busy file becomes a
        ``StoreError`` that names the file (``attempt to write a readonly database``
        alone does not say which)."""
        try:
            with immediate(self.raw):
                yield self._sql
        except sqlite3.Error as error:  # BEGIN, COMMIT or ROLLBACK themselves
            raise translate(error, self.path) from error

    def schema_version(self) -> int:
        return migrations.schema_version(self.conn)

    def migrate(self) -> list[str]:
        with self.write() as sql:
            return migrations.migrate(sql)

    def record_loader(self) -> RecordCache:
        return RecordCache()

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        checkpointer = Checkpointer(self.path)
        checkpointer.start(self.raw)
        try:
            yield
        finally:
            checkpointer.stop()

    def close(self) -> None:
        self.raw.close()
