"""``healthfsm check``: the health probe, one line and its exit code."""

from __future__ import annotations

import typer

from consumer.cli.common import (
    LabelOption,
    LobbyOption,
    StreamOption,
    settings_for,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, with_redis_options
from consumer.settings import default


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
    from consumer.operations.checks import check as run_check

    settings = settings_for(db, redis, stream=stream, label=label, lobby_stream=lobby_stream)
    typer.echo(run_check(settings))
