"""The one shape of SQL access the table modules use, whichever database is behind it.

Table modules (records, offsets, outbox, ...) write their SQL once, with ``?`` placeholders,
against ``Sql``; each backend adapts it (PostgreSQL turns ``?`` into ``%s``). Where the two
dialects differ, the difference is stated once per backend (an attribute of its ``Sql``,
like ``lock_for_update``) or chosen by a ``match`` on ``sql.dialect`` whose ``case _`` is
``assert_never``: adding a third name to ``Dialect`` fails type-checking at every place
that must say what the new backend does. That SQL stays in ``store/`` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Generic, Literal, Protocol, TypedDict, TypeVar, assert_never

Dialect = Literal["sqlite", "postgres"]

T = TypeVar("T")


class PerDialect(TypedDict, Generic[T]):
    """A value stated once per backend; indexing it with a ``Dialect`` fails type-checking
    when a backend is added to ``Dialect`` and not here."""

    sqlite: T
    postgres: T


class Cursor(Protocol):
    """What both drivers' cursors offer: rows, a row count, column names."""

    @property
    def rowcount(self) -> int: ...

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Sql(Protocol):
    """A connection inside (or, for reads, outside) a transaction."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def lock_for_update(self) -> str:
        """Appended to a SELECT whose rows the transaction will change: row locks on
        PostgreSQL; nothing on SQLite, whose write transaction holds the whole file."""
        ...

    @property
    def lock_skipping_locked(self) -> str:
        """Appended to a SELECT that claims rows: rows another transaction has locked are
        skipped on PostgreSQL; nothing on SQLite (one writer at a time)."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


def as_dicts(cursor: Cursor) -> list[dict[str, object]]:
    """The cursor's rows as dicts keyed by column name."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


def insert_unnest(
    conn: Sql,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    returning: str = "",
) -> Cursor:
    """PostgreSQL: insert ``rows`` in one statement, each column sent as one typed array.

    ``columns`` are (name, PostgreSQL type) pairs. One statement per batch instead of one
    per row: measured against ``executemany`` in pipeline mode and ``COPY`` in
    docs/performance.md.
    """
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"?::{kind}[]" for _, kind in columns)
    tail = f" RETURNING {returning}" if returning else ""
    return conn.execute(
        f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}){tail}",
        [list(column) for column in zip(*rows, strict=True)],
    )


def append_bounded(
    conn: Sql,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    keep: int,
) -> None:
    """Append ``rows`` to an append-only ``table`` (``id`` grows) and drop its oldest rows
    beyond ``keep``, inside the caller's transaction: ``executemany`` on SQLite, one
    ``unnest`` statement on PostgreSQL."""
    if not rows:
        return
    match conn.dialect:
        case "postgres":
            insert_unnest(conn, table, columns, rows)
        case "sqlite":
            names = ", ".join(name for name, _ in columns)
            marks = ", ".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
        case _:
            assert_never(conn.dialect)
    conn.execute(f"DELETE FROM {table} WHERE id <= (SELECT max(id) FROM {table}) - ?", [keep])
