"""``healthfsm init`` and ``healthfsm migrate``: create a store, bring its schema up to date,
or move a SQLite store into PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from consumer.cli.common import (
    opened,
)
from consumer.cli.options import DEFAULT_DB, DbOption


def init(db: DbOption = DEFAULT_DB) -> None:
    """Create an empty healthfsm store (or confirm that the file or schema already is one)."""
    from store import SCHEMA_VERSION, shown_location, store_exists

    existed = store_exists(db)
    with opened(db, create=True):
        pass
    state = "already a healthfsm store" if existed else "created"
    shown = shown_location(db)
    typer.echo(json.dumps({"db": shown, "state": state, "schema_version": SCHEMA_VERSION}))


def migrate(
    db: DbOption = DEFAULT_DB,
    from_sqlite: Annotated[
        Path | None,
        typer.Option(
            "--from-sqlite",
            metavar="PATH",
            help="Copy this SQLite store into --db (a postgresql:// URL): records with the"
            " debounce state, offsets, partition counts, leases (so epochs go on), dead"
            " letters and history.",
        ),
    ] = None,
) -> None:
    """Bring a store's schema up to date, or move a SQLite store into PostgreSQL."""
    from store import SCHEMA_VERSION, is_postgres_url, migrate_database, shown_location

    if from_sqlite is not None:
        if not is_postgres_url(db):
            raise typer.BadParameter("--from-sqlite needs a postgresql:// URL", param_hint="--db")
        from store.transfer import copy_sqlite_store

        typer.echo(json.dumps(copy_sqlite_store(from_sqlite, db)))
        return
    before, applied = migrate_database(db)
    shown = shown_location(db)
    typer.echo(
        json.dumps(
            {"db": shown, "from_version": before, "to_version": SCHEMA_VERSION, "applied": applied}
        )
    )
