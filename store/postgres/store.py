"""``Store`` on PostgreSQL: one connection, explicit transactions, rows locked per batch."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg

from statemachine import RuntimeRecord
from store import migrations, records
from store.errors import StoreUnavailable
from store.postgres.connect import connect, redact_dsn, translated
from store.sql import Cursor, Dialect, Sql


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The table modules' ``?`` as psycopg's binary ``%b`` (their SQL has no other ``?`` or
    ``%``). Binary parameters skip the text array dumper's per-element quoting."""
    return sql.replace("?", "%b")


class PgSql:
    """``Sql`` over a psycopg connection; driver errors surface as the store's errors."""

    dialect: Dialect = "postgres"
    lock_for_update = " FOR UPDATE"
    lock_skipping_locked = " FOR UPDATE SKIP LOCKED"
    """Row locks: writers of different rows go on side by side, until their transaction ends."""

    def __init__(self, conn: psycopg.Connection[Any], location: str) -> None:
        self.raw = conn
        self.location = location

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        with translated(self.location):
            return self.raw.execute(_placeholders(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """All rows in one pipeline (psycopg sends them without waiting for each reply)."""
        with translated(self.location), self.raw.cursor() as cursor:
            cursor.executemany(_placeholders(sql), rows)


class LockingLoader:
    """Loads a batch's records with ``SELECT ... FOR UPDATE``: nothing is kept between batches.

    Other services update ``runtime_records`` at any moment, so the status a batch compares
    must be the committed one, and it must stay so until the batch commits: the row lock
    makes a concurrent ``UPDATE ... WHERE status = ...`` wait and then see the batch's
    result, so neither side loses the other's update.
    """

    def load(self, sql: Sql, game_ids: Iterable[str]) -> dict[str, RuntimeRecord]:
        return records.load_many(sql, game_ids, for_update=True)

    def committed(self, touched: Iterable[RuntimeRecord]) -> None:
        """Nothing is cached."""

    def invalidate(self) -> None:
        """Nothing is cached."""


class PostgresStore:
    """An open store on a PostgreSQL server; reconnects on the next use after an outage."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, lock_timeout_s: float, read_only: bool = False) -> None:
        self.url = url
        self.lock_timeout_s = lock_timeout_s
        self.read_only = read_only
        self._location = redact_dsn(url)
        self._conn: psycopg.Connection[Any] | None = None

    @property
    def location(self) -> str:
        return self._location

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = None
            conn = connect(self.url, lock_timeout_s=self.lock_timeout_s, read_only=self.read_only)
            self._conn = conn
        return conn

    @property
    def conn(self) -> PgSql:
        return PgSql(self._connection(), self._location)

    @contextlib.contextmanager
    def write(self) -> Iterator[PgSql]:
        conn = self._connection()
        try:
            with translated(self._location), conn.transaction():
                yield PgSql(conn, self._location)
        except StoreUnavailable:
            self._drop()
            raise

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def schema_version(self) -> int:
        return migrations.schema_version(self.conn)

    def migrate(self) -> list[str]:
        with self.write() as sql:
            return migrations.migrate(sql)

    def record_loader(self) -> LockingLoader:
        return LockingLoader()

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Nothing to do beside the worker: the server checkpoints on its own."""
        yield

    def close(self) -> None:
        self._drop()
