"""Operator commands: health check, offsets, dead letters, outbox, per-game history."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Annotated

import redis
import typer
from redis.exceptions import RedisError

from consumer.cli.common import (
    EXIT_USAGE,
    JsonFlag,
    LabelOption,
    LobbyOption,
    StreamOption,
    fail,
    now_ms,
    opened,
    settings_for,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, with_redis_options
from consumer.contract import constants as c
from consumer.errors import CheckFailed
from consumer.settings import ConsumerSettings, default
from store.backend import Store

__all__ = ["CheckFailed", "register"]


@contextlib.contextmanager
def store_and_redis(db: str, settings: ConsumerSettings) -> Iterator[tuple[Store, redis.Redis]]:
    """An existing database and a Redis client, both closed afterwards."""
    from consumer.runtime.redis_client import client_for

    with opened(db) as database:
        client = client_for(settings)
        try:
            yield database, client
        finally:
            client.close()


offsets_app = typer.Typer(
    help="Show or move stored stream offsets.", no_args_is_help=True, rich_markup_mode=None
)
dead_letters_app = typer.Typer(
    help="Inspect and replay rejected entries.", no_args_is_help=True, rich_markup_mode=None
)
outbox_app = typer.Typer(
    help="Inspect or publish pending snapshots.", no_args_is_help=True, rich_markup_mode=None
)


@with_redis_options
def check(
    redis: RedisOptions,
    db: DbOption = DEFAULT_DB,
    stream: StreamOption = default("stream"),
    label: LabelOption = default("label"),
    lobby_stream: LobbyOption = default("lobby_stream"),
) -> None:
    """Health probe: exit 0 when Redis answers and runs the publish fence, the schema is
    current and the offset is in the stream; otherwise exit 1 with a one-line reason."""
    from consumer.cli.operator_actions import check as run_check

    settings = settings_for(db, redis, stream=stream, label=label, lobby_stream=lobby_stream)
    typer.echo(run_check(settings))


@offsets_app.command("show")
def offsets_show(db: DbOption = DEFAULT_DB, as_json: JsonFlag = False) -> None:
    """Every stored offset (label, partition, entry id, when it moved, entries read) and
    who holds each lease: one row per partition (a label with one partition has one)."""
    from consumer.cli.operator_actions import offset_rows
    from consumer.cli.render import rows_table
    from consumer.runtime.clock import wall_clock_ms

    with opened(db, read_only=True) as database:
        rows = offset_rows(database.conn, wall_clock_ms())
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        columns = ["label", "partition", "entry_id", "updated_at_ms", "entries_read", "lease"]
        rows_table(rows, columns, "stream offsets")


@offsets_app.command("set")
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
    from consumer.cli.operator_actions import refuse_while_leased
    from consumer.cli.partition_actions import set_every_offset
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


@dead_letters_app.command("list")
def dead_letters_list(
    reason: Annotated[
        str | None, typer.Option(metavar="REASON", help="Only this reason code.")
    ] = None,
    limit: Annotated[int, typer.Option(metavar="N", min=1, help="Newest N rows.")] = 50,
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """The newest dead letters: entry id, reason, detail, raw fields."""
    from consumer.cli.render import rows_table
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


@dead_letters_app.command("replay")
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
    from consumer.cli.operator_actions import replay_dead_letters

    if reason is None and not ids:
        fail("say which rows: --reason R and/or --id N", EXIT_USAGE)
    settings = settings_for(db, redis, stream=stream)
    with store_and_redis(db, settings) as (database, client):
        replayed, skipped = replay_dead_letters(
            database, client, stream, reason=reason, ids=list(ids or []), limit=limit
        )
    typer.echo(json.dumps({"replayed": replayed, "skipped": skipped, "stream": stream}))


@outbox_app.command("show")
def outbox_show(
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, help="Show at most N rows, oldest first.")
    ] = 50,
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """Snapshots committed but not yet published (normally empty)."""
    from consumer.cli.render import rows_table
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


@outbox_app.command("flush")
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
    from consumer.cli.operator_actions import flush_outbox

    settings = settings_for(db, redis, lobby_stream=lobby_stream)
    with store_and_redis(db, settings) as (database, client):
        sent = flush_outbox(database, client, lobby_stream, force=force)
    typer.echo(json.dumps({"published": sent, "stream": lobby_stream}))


def runtime_history(
    game_id: Annotated[str, typer.Argument(metavar="GAME_ID", help="The game's id.")],
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """The status transitions and summaries applied to a game, with the entry id of each."""
    from consumer.cli.render import rows_table
    from store import history, records

    with opened(db, read_only=True) as database:
        records.get(database.conn, game_id)  # GameNotFound for an unknown id
        rows = history.for_game(database.conn, game_id)
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        rows_table(
            rows,
            ["id", "entry_id", "cause", "from_status", "to_status", "engine_health", "at_ms"],
            f"history of {game_id}",
        )


partitions_app = typer.Typer(
    help="Show or change how a label's games are shared among workers.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@partitions_app.command("set")
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
    from consumer.cli.partition_actions import repartition

    if not label.strip():
        raise typer.BadParameter("must not be blank", param_hint="LABEL")
    if not yes:
        fail("re-partitioning fences every worker of the label; add --yes to confirm", EXIT_USAGE)
    with opened(db) as database:
        typer.echo(json.dumps(repartition(database, label, count, now_ms())))


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
    from consumer.cli import partition_actions as pa
    from consumer.cli.render import rows_table
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


def register(app: typer.Typer, runtime_app: typer.Typer) -> None:
    """Attach the operator commands to the main app."""
    app.command("check")(check)
    app.add_typer(offsets_app, name="offsets")
    partitions_app.command("show")(partitions_show)
    app.add_typer(partitions_app, name="partitions")
    app.add_typer(dead_letters_app, name="dead-letters")
    app.add_typer(outbox_app, name="outbox")
    runtime_app.command("history")(runtime_history)
