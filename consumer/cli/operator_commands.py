"""Operator commands: health check, offsets, dead letters, outbox, per-game history."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated

import redis
import typer

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
) -> None:
    """Health probe: exit 0 when Redis answers, the schema is current and the offset is in the
    stream; otherwise exit 1 with a one-line reason."""
    from consumer.cli.operator_actions import check as run_check

    typer.echo(run_check(settings_for(db, redis, stream=stream, label=label)))


@offsets_app.command("show")
def offsets_show(db: DbOption = DEFAULT_DB, as_json: JsonFlag = False) -> None:
    """Every stored offset (label, entry id, when it moved, entries read) and who holds
    each label's lease."""
    from consumer.cli.operator_actions import describe_lease
    from consumer.cli.render import rows_table
    from consumer.runtime.clock import wall_clock_ms
    from store import lease, offsets

    now = wall_clock_ms()
    with opened(db, read_only=True) as database:
        rows = offsets.list_all(database.conn)
        for row in rows:
            held = lease.read(database.conn, str(row["label"]))
            live = held is not None and held.live(now)
            row["lease_holder"] = held.holder if held is not None and live else None
            row["lease_epoch"] = held.epoch if held is not None else None
            row["lease_expires_at_ms"] = held.expires_at_ms if held is not None and live else None
            row["lease"] = describe_lease(held, now)
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        rows_table(
            rows, ["label", "entry_id", "updated_at_ms", "entries_read", "lease"], "stream offsets"
        )


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
    """Move an offset (stop the consumer first). Needs --yes: it skips or replays entries."""
    from consumer.cli.operator_actions import refuse_while_leased
    from store import offsets
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
            before = offsets.load(conn, label)
            offsets.set_to(conn, label, entry_id, now_ms())
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


def register(app: typer.Typer, runtime_app: typer.Typer) -> None:
    """Attach the operator commands to the main app."""
    app.command("check")(check)
    app.add_typer(offsets_app, name="offsets")
    app.add_typer(dead_letters_app, name="dead-letters")
    app.add_typer(outbox_app, name="outbox")
    runtime_app.command("history")(runtime_history)
