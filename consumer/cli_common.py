"""What every ``healthfsm`` command shares: exit codes, option types, small helpers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn

import sqlite_utils
import typer

from consumer import constants as c
from consumer.models import ConsumerSettings

EXIT_OK = 0
EXIT_ERROR = 1
"""Operational failure: missing game or database, unreachable service, bad schema."""
EXIT_USAGE = 2
"""Bad command-line argument."""
EXIT_CONFLICT = 3
"""``set-status``: the record is not in ``--from``."""
EXIT_NOT_ALLOWED = 4
"""``set-status``: the transition table has no such change."""

DbOption = Annotated[
    Path, typer.Option("--db", envvar=c.ENV_DB, help="SQLite database file.", show_default=True)
]
RedisUrlOption = Annotated[
    str,
    typer.Option("--redis-url", envvar=c.ENV_REDIS_URL, help="Redis URL (redis:// or rediss://)."),
]


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line to stderr and exit."""
    typer.echo(f"healthfsm: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def opened(
    path: Path, *, read_only: bool = False, create: bool = False
) -> Iterator[sqlite_utils.Database]:
    """The store at ``path`` for one command, closed afterwards.

    Only ``create`` makes a new file; ``read_only`` commands never write (not even the WAL
    switch or a migration). A missing, foreign or out-of-date file is a one-line error.
    """
    from store import open_database

    database = open_database(path, read_only=read_only, create=create)
    try:
        yield database
    finally:
        database.close()


def now_ms() -> int:
    from consumer.worker import wall_clock_ms

    return wall_clock_ms()


TlsCa = Annotated[
    str | None, typer.Option("--redis-ca", help="CA bundle to verify a rediss:// server.")
]
TlsCert = Annotated[
    str | None, typer.Option("--redis-cert", help="Client certificate for rediss:// (mTLS).")
]
TlsKey = Annotated[str | None, typer.Option("--redis-key", help="Key of --redis-cert.")]
StreamOption = Annotated[str, typer.Option("--stream", help="Input stream of health events.")]
LobbyOption = Annotated[
    str, typer.Option("--lobby-stream", help="Output stream for runtime snapshots.")
]
LabelOption = Annotated[str, typer.Option("--label", help="Offset label in stream_offsets.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def settings_for(db: Path, redis_url: str, **options: object) -> ConsumerSettings:
    """Settings built at the CLI edge; the password comes from the environment if set."""
    return ConsumerSettings.model_validate(
        {
            "db_path": str(db),
            "redis_url": redis_url,
            "redis_password": os.environ.get(c.ENV_REDIS_PASSWORD),
            **{k: v for k, v in options.items() if v is not None},
        }
    )
