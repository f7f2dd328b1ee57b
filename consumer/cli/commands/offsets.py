"""``healthfsm offsets``: show or move stored stream offsets."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from consumer.cli.common import (
    EXIT_USAGE,
    JsonFlag,
    fail,
    now_ms,
    opened,
)
from consumer.cli.options import DEFAULT_DB, DbOption

app = typer.Typer(
    help="Show or move stored stream offsets.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("show")
def offsets_show(db: DbOption = DEFAULT_DB, as_json: JsonFlag = False) -> None:
    """Every stored offset (label, partition, entry id, when it moved, entries read) and
    who holds each lease: one row per partition (a label with one partition has one)."""
    from consumer.display import rows_table
    from consumer.operations.offsets import offset_rows
    from consumer.runtime.clock import wall_clock_ms

    with opened(db, read_only=True) as database:
        rows = offset_rows(database.conn, wall_clock_ms())
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        columns = ["label", "partition", "entry_id", "updated_at_ms", "entries_read", "lease"]
        rows_table(rows, columns, "stream offsets")


@app.command("set")
def offsets_set(
    label: Annotated[str, typer.Argument(metavar="LABEL", help="The consumer's offset label.")],
    entry_id: Annotated[
        str, typer.Argument(metavar="ENTRY_ID", help="Stream entry id, like 1700000000000-0.")
    ],
    yes: Annotated[
        bool, typer.Option("--yes", help="Confirm: entries after it are (re)applied.", metavar="")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Move it even while a worker holds the label's lease.", metavar=""
        ),
    ] = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Move an offset, every partition's (stop the consumers first). Needs --yes: it skips or
    replays entries."""
    from consumer.operations.offsets import refuse_while_leased, set_every_offset
    from store.stream_id import StreamId

    if not label.strip():
        raise typer.BadParameter("must not be blank", param_hint="LABEL")
    try:
        StreamId.parse(entry_id)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="ENTRY_ID") from error
    if not yes:
        fail("moving an offset skips or re-applies entries; add --yes to confirm", EXIT_USAGE)
    with opened(db) as database:
        refuse_while_leased(database, label, "refusing to move the offset", force)
        with database.write() as conn:
            before = set_every_offset(conn, label, entry_id, now_ms())
    if before is None:
        typer.echo(
            f"healthfsm: note: label {label!r} had no offset; it is new in this database",
            err=True,
        )
    typer.echo(
        json.dumps(
            {"label": label, "entry_id": entry_id, "previous": before, "new_label": before is None}
        )
    )
