"""What every ``healthfsm`` command shares: exit codes, option types, small helpers."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import redis
import typer
from pydantic import ValidationError

from consumer.cli.options import RedisOptions, setting
from consumer.contract import constants as c
from consumer.runtime.redis_client import redact_url
from consumer.settings import ConsumerSettings, flag
from store.backend import Store

EXIT_OK = 0
EXIT_ERROR = 1
"""Operational failure: missing game or database, unreachable service, bad schema."""
EXIT_USAGE = 2
"""Bad command-line argument."""
EXIT_CONFLICT = 3
"""``set-status``: the record is not in ``--from``."""
EXIT_NOT_ALLOWED = 4
"""``set-status``: the transition table has no such change."""


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line to stderr and exit."""
    typer.echo(f"healthfsm: error: {message}", err=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def opened(location: str, *, read_only: bool = False, create: bool = False) -> Iterator[Store]:
    """The store ``--db`` names for one command, closed afterwards.

    Only ``create`` makes a new file (or tables); ``read_only`` commands never write (not
    even the WAL switch or a migration). A missing, foreign or out-of-date store is a
    one-line error.
    """
    from store import open_database

    database = open_database(location, read_only=read_only, create=create)
    try:
        yield database
    finally:
        database.close()


def now_ms() -> int:
    from consumer.runtime.clock import wall_clock_ms

    return wall_clock_ms()


StreamOption = Annotated[str, setting("stream", metavar="NAME")]
LobbyOption = Annotated[str, setting("lobby_stream", metavar="NAME")]
LabelOption = Annotated[str, setting("label", metavar="LABEL")]
JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.", metavar="")
]


REDIS_SCHEMES = ("redis", "rediss", "unix")


def check_redis_options(url: str, tls_files: dict[str, object]) -> None:
    """Usage errors (exit 2) for a Redis URL or TLS files that cannot work, naming the culprit.

    A scheme redis-py does not know, a database that is not a number (``redis://h/abc``),
    TLS files with a plain ``redis://`` URL, or a TLS file that does not exist.
    """
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (urlsplit checks the port when it is asked for)
    except ValueError as error:
        raise typer.BadParameter(
            f"{redact_url(url)!r}: the port is not a number from 0 to 65535 ({error})",
            param_hint="--redis-url",
        ) from None
    if parts.scheme not in REDIS_SCHEMES:
        raise typer.BadParameter(
            f"{redact_url(url)!r} is not a Redis URL (redis://, rediss:// or unix://)",
            param_hint="--redis-url",
        )
    database = parts.path.lstrip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise typer.BadParameter(
            f"database {database!r} in {redact_url(url)!r} is not a number",
            param_hint="--redis-url",
        )
    given = {flag: value for flag, value in tls_files.items() if value is not None}
    if given and parts.scheme != "rediss":
        raise typer.BadParameter(
            f"{', '.join(given)} need a rediss:// URL", param_hint="--redis-url"
        )
    for name, value in given.items():
        if not Path(str(value)).is_file():
            raise typer.BadParameter(f"file {value} does not exist", param_hint=name)


def settings_for(db: str, redis: RedisOptions, **options: object) -> ConsumerSettings:
    """Settings built at the CLI edge, the one place a bad value becomes exit 2 naming its
    flag. The Redis password comes from the environment if set."""
    check_redis_options(
        redis.url, {"--redis-ca": redis.ca, "--redis-cert": redis.cert, "--redis-key": redis.key}
    )
    given = {"db_path": str(db), **redis.as_settings(), **options}
    try:
        return ConsumerSettings.model_validate(
            {
                "redis_password": os.environ.get(c.ENV_REDIS_PASSWORD),
                **{k: v for k, v in given.items() if v is not None},
            }
        )
    except ValidationError as error:
        problem = error.errors()[0]
        where = problem["loc"][0] if problem["loc"] else ""
        message = problem["msg"].removeprefix("Value error, ")
        raise typer.BadParameter(
            f"{problem.get('input')!r}: {message}" if where else message,
            param_hint=flag(str(where)) if where else None,
        ) from None


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
