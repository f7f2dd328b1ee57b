"""``healthfsm dead-letters``: inspect and replay rejected entries."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from consumer.cli.common import (
    EXIT_USAGE,
    JsonFlag,
    StreamOption,
    fail,
    opened,
    settings_for,
    store_and_redis,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, with_redis_options
from consumer.contract import constants as c
from consumer.settings import default

app = typer.Typer(
    help="Inspect and replay rejected entries.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("list")
def dead_letters_list(
    reason: Annotated[
        str | None, typer.Option(metavar="REASON", help="Only this reason code.")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="Newest N rows.")] = 50,
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """The newest dead letters: entry id, reason, detail, raw fields."""
    from consumer.display import rows_table
    from store import dead_letters

    if reason is not None and reason not in c.REJECT_REASONS:
        raise typer.BadParameter(
            f"unknown reason {reason!r} (one of {', '.join(c.REJECT_REASONS)})",
            param_hint="--reason",
        )
    with opened(db, read_only=True) as database:
        rows = dead_letters.list_recent(database.conn, reason=reason, limit=limit)
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        for row in rows:
            row["claimed"] = row["claimed_by"] or "-"
        rows_table(
            rows, ["id", "entry_id", "reason", "detail", "fields", "claimed"], "dead letters"
        )


@app.command("replay")
@with_redis_options
def dead_letters_replay(
    reason: Annotated[
        str | None, typer.Option(metavar="REASON", help="Replay rows of this reason.")
    ] = None,
    ids: Annotated[
        list[int] | None,
        typer.Option("--id", metavar="ID", help="Replay these dead-letter ids (repeatable)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, help="At most N rows (oldest first).")
    ] = 1000,
    *,
    redis: RedisOptions,
    stream: StreamOption = default("stream"),
    db: DbOption = DEFAULT_DB,
) -> None:
    """Re-inject dead letters into the input stream once their cause is fixed (for example
    the missing game was registered); replayed rows leave the table."""
    from consumer.operations.dead_letters import replay_dead_letters

    if reason is None and not ids:
        fail("say which rows: --reason R and/or --id N", EXIT_USAGE)
    settings = settings_for(db, redis, stream=stream)
    with store_and_redis(db, settings) as (database, client):
        replayed, skipped = replay_dead_letters(
            database, client, stream, reason=reason, ids=list(ids or []), limit=limit
        )
    typer.echo(json.dumps({"replayed": replayed, "skipped": skipped, "stream": stream}))
