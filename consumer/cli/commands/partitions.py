"""``healthfsm partitions``: show or change how a label's games are shared among workers."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from redis.exceptions import RedisError

from consumer.cli.common import (
    EXIT_USAGE,
    JsonFlag,
    StreamOption,
    fail,
    now_ms,
    opened,
    settings_for,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, with_redis_options
from consumer.contract import constants as c
from consumer.settings import default

app = typer.Typer(
    help="Show or change how a label's games are shared among workers.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("set")
def partitions_set(
    label: Annotated[str, typer.Argument(metavar="LABEL", help="The consumer's offset label.")],
    count: Annotated[
        int,
        typer.Argument(metavar="N", min=1, max=256, help="The new partition count, 1 to 256."),
    ],
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Confirm: every holder is fenced and the workers rebalance.",
            metavar="",
        ),
    ] = False,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Change a label's partition count, also while workers run. Each new partition starts
    at the lowest offset of the old ones whose games it takes; no entry applies twice."""
    from consumer.operations.partitions import repartition

    if not label.strip():
        raise typer.BadParameter("must not be blank", param_hint="LABEL")
    if not yes:
        fail("re-partitioning fences every worker of the label; add --yes to confirm", EXIT_USAGE)
    with opened(db) as database:
        typer.echo(json.dumps(repartition(database, label, count, now_ms())))


@app.command("show")
@with_redis_options
def partitions_show(
    redis: RedisOptions,
    label: Annotated[
        str | None,
        typer.Option("--label", metavar="LABEL", help="Only this label (default: every one)."),
    ] = None,
    game: Annotated[
        str | None,
        typer.Option("--game", metavar="ID", help="Print only which partition this game is in."),
    ] = None,
    stream: StreamOption = default("stream"),
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """Each partition of each label: holder, epoch, expiry, offset and lag (entries behind
    the stream's end; only with --redis-url or $HEALTHFSM_REDIS_URL, empty when Redis does
    not answer)."""
    from consumer.display import rows_table
    from consumer.operations import partitions as pa
    from consumer.runtime.clock import wall_clock_ms
    from consumer.runtime.redis_client import client_for

    now = wall_clock_ms()
    with opened(db, read_only=True) as database:
        if game is not None:
            where = pa.game_partition(database.conn, label or default("label"), game)
            if as_json:
                typer.echo(json.dumps(where))
            else:
                typer.echo(
                    f"game {game!r}: slot {where['slot']}, partition {where['partition']}"
                    f" of {where['partitions']} (label {where['label']!r})"
                )
            return
        names = [label] if label is not None else pa.labels(database.conn)
        rows = [row for name in names for row in pa.partition_rows(database.conn, name, now)]
    for row in rows:
        row["lag_entries"] = None
    if redis.url != default("redis_url") or c.ENV_REDIS_URL in os.environ:  # asked for it
        settings = settings_for(db, redis, stream=stream)
        client = client_for(settings)
        try:
            pa.add_lag(rows, client, settings.stream, now)
        except RedisError as error:
            typer.echo(f"healthfsm: note: no lag shown, redis did not answer: {error}", err=True)
            for row in rows:
                row["lag_entries"] = None
        finally:
            client.close()
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        columns = ["label", "partition", "entry_id", "lag_entries", "lease"]
        rows_table(rows, columns, "partitions")
