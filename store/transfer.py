"""Moving a SQLite store into PostgreSQL: ``healthfsm migrate --from-sqlite PATH --db URL``.

Everything a worker needs to go on where the SQLite one stopped is copied in one
transaction with ``COPY``: records (with the debounce state), offsets (the label's and each
partition's, with ``entries_read``), each label's partition count, the lease rows, dead
letters (with their claims), history, and the outbox's sequence, so an admin snapshot's
``admin-<seq>`` is never given out twice. The lease rows are copied as they are (the move
refuses a live one, so none binds anybody): each partition's epoch goes on growing from
where it was instead of starting again at 1. Every other table is named in ``LEFT_BEHIND``
with the reason, and a test fails on a table that is in neither list.
"""

from __future__ import annotations

import time
from pathlib import Path

from store.errors import LeaseHeld, TransferRefused
from store.outbox import last_seq, pending
from store.partitions import live_leases
from store.postgres import open_postgres
from store.postgres.store import PgSql
from store.sqlite import DEFAULT_BUSY_TIMEOUT_S, SqliteStore, open_sqlite

TABLES = (
    "runtime_records",
    "stream_offsets",
    "label_partitions",
    "partition_owners",
    "partition_offsets",
    "dead_letters",
    "runtime_history",
    "runtime_traffic",
)
"""What is copied, in this order, with every column the source has (sqlite-utils reads them
from the file, so a column a migration adds is copied without a second list of names); the
identity columns keep their values. Views (``leases``, ``partition_leases``) are not tables:
the target's own show its copied ``partition_owners``."""

LEFT_BEHIND = {
    "outbox": "the move is refused while it holds a snapshot (the target would publish it a"
    " second time); only its sequence is carried on",
    "workers": "heartbeats of the source's workers, which must be stopped for a move; the"
    " target's workers announce themselves",
    "schema_migrations": "the target records its own, from the migrations that created it",
    "store_identity": "the target is a publisher of its own: Redis keeps its games' last"
    " appended outbox seqs under its identity, from empty, and its seqs go on above the"
    " source's",
}
"""The source's tables deliberately not copied, with the reason (``sqlite_*`` tables are
SQLite's own)."""

IDENTITIES = {"dead_letters": "id", "runtime_history": "id"}


def copy_sqlite_store(source: Path, url: str) -> dict[str, object]:
    """Copy the SQLite store at ``source`` into the (new or empty) store at ``url``.

    Refuses while the source outbox holds unpublished snapshots (publish them first: the
    copy would publish them a second time from PostgreSQL), while a worker holds a lease on
    the source, and when the target already holds rows in a table it copies. Returns the
    rows copied per table, and the outbox sequence carried on.
    """
    lite = open_sqlite(source, read_only=True)
    try:
        waiting = pending(lite.conn)
        if waiting:
            raise TransferRefused(
                f"{source} has {waiting} unpublished snapshots in its outbox; publish them"
                f" first ('healthfsm outbox flush --db {source}') and stop its worker"
            )
        held = live_leases(lite.conn, int(time.time() * 1000))
        if held:
            raise LeaseHeld(
                f"{source} is in use: a worker holds the lease for label {held[0].label!r},"
                f" partition {held[0].partition} ({held[0].describe()}); stop it first"
            )
        target = open_postgres(url, lock_timeout_s=DEFAULT_BUSY_TIMEOUT_S, create=True)
        try:
            with target.write() as sql:
                assert isinstance(sql, PgSql)
                return _copy(lite, sql, source, target.location)
        finally:
            target.close()
    finally:
        lite.close()


def _copy(lite: SqliteStore, sql: PgSql, source: Path, location: str) -> dict[str, object]:
    sql.execute("LOCK TABLE runtime_records IN EXCLUSIVE MODE")
    _require_empty(sql, location)
    counts: dict[str, object] = {"from": str(source), "to": location}
    with sql.raw.cursor() as cursor:
        for table in TABLES:
            names = ", ".join(column.name for column in lite.utils[table].columns)
            rows = lite.conn.execute(f"SELECT {names} FROM {table} ORDER BY 1")
            copied = 0
            with cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
                    copied += 1
            counts[table] = copied
    for table, column in IDENTITIES.items():
        _continue_identity(sql, table, column, None)
    outbox_seq = last_seq(lite.conn)
    _continue_identity(sql, "outbox", "seq", outbox_seq)
    counts["outbox_seq"] = outbox_seq
    return counts


def _require_empty(sql: PgSql, location: str) -> None:
    """Refuse a target that holds rows in a copied table (records, or the offsets and lease
    rows a worker started on it wrote): a copy would mix two stores, or fail on a key."""
    for table in TABLES:
        existing = int(sql.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        if existing:
            what = "runtime records" if table == "runtime_records" else f"rows in {table}"
            raise TransferRefused(
                f"{location} already holds {existing} {what}; copy into an empty store"
            )


def _continue_identity(sql: PgSql, table: str, column: str, floor: int | None) -> None:
    """Let the identity go on after the copied values (and after ``floor``, if given)."""
    top = int(sql.execute(f"SELECT coalesce(max({column}), 0) FROM {table}").fetchone()[0])
    top = max(top, floor or 0)
    if top:
        sql.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), ?)", [top])
