"""Opening a store on PostgreSQL with the same rules as a SQLite file."""

from __future__ import annotations

from store.errors import NotAStore, SchemaError, StoreMissing
from store.migrations import MARKER_TABLES, SCHEMA_VERSION, needs_migration
from store.postgres.store import PostgresStore
from store.sql import Sql


def tables(sql: Sql) -> set[str]:
    """Which healthfsm marker tables the connection's default schema holds."""
    names = sorted(MARKER_TABLES)
    probes = ", ".join(f"to_regclass('{name}') IS NOT NULL" for name in names)
    row = sql.execute(f"SELECT {probes}").fetchone()
    return {name for name, present in zip(names, row, strict=True) if present}


def open_postgres(
    url: str,
    *,
    lock_timeout_s: float,
    create: bool = False,
    upgrade: bool = True,
    read_only: bool = False,
) -> PostgresStore:
    """Open the healthfsm tables in the URL's default schema.

    - A schema without them is ``StoreMissing`` unless ``create`` (``init``, ``runtime add``,
      ``migrate``) makes them; other tables beside them are the platform's and are fine.
    - A ``runtime_records`` table without ``schema_migrations`` belongs to someone else:
      ``NotAStore``, untouched.
    - ``read_only`` refuses writes in the server and an out-of-date schema.
    """
    store = PostgresStore(url, lock_timeout_s=lock_timeout_s, read_only=read_only)
    try:
        if store.conn.execute("SELECT current_schema()").fetchone()[0] is None:
            raise StoreMissing(
                f"database {store.location}: its search_path names no schema this role can"
                " use (does the schema exist, and does the role have USAGE on it?)"
            )
        found = tables(store.conn)
        if "schema_migrations" not in found:
            if found:
                raise NotAStore(
                    f"{store.location}: table {sorted(found)[0]} exists but is not healthfsm's"
                    " (no schema_migrations); refusing to touch it"
                )
            if not create or read_only:
                raise StoreMissing(
                    f"database {store.location} has no healthfsm tables in its default"
                    f" schema (create them with 'healthfsm init --db URL')"
                )
        if read_only:
            if needs_migration(store.conn):
                raise SchemaError(
                    f"database {store.location} has schema version {store.schema_version()},"
                    f" this healthfsm needs {SCHEMA_VERSION}; upgrade it with"
                    " 'healthfsm migrate --db URL'"
                )
        elif upgrade and needs_migration(store.conn):
            store.migrate()
    except BaseException:
        store.close()
        raise
    return store
