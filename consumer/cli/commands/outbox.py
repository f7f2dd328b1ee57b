"""``healthfsm outbox``: inspect or publish pending snapshots."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from consumer.cli.common import (
    JsonFlag,
    LobbyOption,
    opened,
    settings_for,
    store_and_redis,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, with_redis_options
from consumer.settings import default

app = typer.Typer(
    help="Inspect or publish pending snapshots.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("show")
def outbox_show(
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, help="Show at most N rows, oldest first.")
    ] = 50,
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """Snapshots committed but not yet published (normally empty)."""
    from consumer.display import rows_table
    from store import outbox

    with opened(db, read_only=True) as database:
        rows = [{"seq": seq, **row._asdict()} for seq, row in outbox.peek(database.conn, limit)]
        pending = outbox.pending(database.conn)
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        rows_table(
            rows,
            ["seq", "source_entry_id", "game_id", "runtime_status", "engine_health_summary"],
            f"outbox: {pending} pending",
        )


@app.command("flush")
@with_redis_options
def outbox_flush(
    redis: RedisOptions,
    lobby_stream: LobbyOption = default("lobby_stream"),
    db: DbOption = DEFAULT_DB,
    force: Annotated[
        bool, typer.Option("--force", help="Publish even while a worker holds a lease.", metavar="")
    ] = False,
) -> None:
    """Publish every pending snapshot now, in order (refused while a worker runs)."""
    from consumer.operations.outbox import flush_outbox

    settings = settings_for(db, redis, lobby_stream=lobby_stream)
    with store_and_redis(db, settings) as (database, client):
        sent = flush_outbox(database, client, lobby_stream, force=force)
    typer.echo(json.dumps({"published": sent, "stream": lobby_stream}))
