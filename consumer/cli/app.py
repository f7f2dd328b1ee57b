"""The ``healthfsm`` command line: the app, its commands attached in the order ``--help``
lists them (each group's commands live in ``consumer.cli.commands``), and the one place
that turns a known error into a one-line message and an exit code."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Annotated

import redis
import typer
from typer.exceptions import TyperException

from consumer.cli.commands import (
    consume,
    dead_letters,
    offsets,
    outbox,
    partitions,
    probe,
    runtime,
    store,
    tools,
)
from consumer.cli.common import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_NOT_ALLOWED,
    EXIT_OK,
    EXIT_USAGE,
)
from consumer.contract import constants as c
from consumer.errors import CheckFailed
from consumer.runtime import log_queue, logs
from statemachine.errors import HealthFsmError, StatusConflict, TransitionNotAllowed
from store.errors import GameExists, GameNotFound

app = typer.Typer(
    name="healthfsm",
    help="Drive game runtime records from Redis Stream health events, through a state machine,"
    " into SQLite or PostgreSQL; publish runtime snapshots for Game Lobby.",
    no_args_is_help=True,
    # click's plain help: wraps to the terminal, never cuts a default (rich's panels cut
    # them at 80 columns when stdout is not a terminal) and has no "--help <bool>".
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"healthfsm {version('healthfsm')}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print the version and exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Drive game runtime records from Redis Stream health events, through a state machine,
    into SQLite or PostgreSQL; publish runtime snapshots for Game Lobby."""


_EXIT_CODES: list[tuple[type[HealthFsmError], int]] = [
    (StatusConflict, EXIT_CONFLICT),
    (TransitionNotAllowed, EXIT_NOT_ALLOWED),
    (GameNotFound, EXIT_ERROR),
    (GameExists, EXIT_ERROR),
    (CheckFailed, EXIT_ERROR),
]


# the order --help lists them in
for command in (
    consume.consume,
    store.init,
    store.migrate,
    tools.diagram,
    tools.demo,
    tools.bench,
):
    app.command()(command)
app.command("check")(probe.check)
for group, name in (
    (runtime.app, "runtime"),
    (offsets.app, "offsets"),
    (partitions.app, "partitions"),
    (dead_letters.app, "dead-letters"),
    (outbox.app, "outbox"),
):
    app.add_typer(group, name=name)


def _exit_code(error: HealthFsmError) -> int:
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_ERROR


def _say(line: str) -> None:
    """One line on stderr for the user: behind the queued log records while the log
    writer runs (so it neither overtakes them nor blocks on a stalled stderr)."""
    writer = log_queue.installed()
    if writer is not None:
        writer.write_line(line)
    else:
        typer.echo(line, err=True)


def _usage_error(error: TyperException) -> int:
    ctx = getattr(error, "ctx", None)
    if type(error).__name__ == "NoArgsIsHelpError" and ctx is not None:
        _say(ctx.get_help())  # a command group without a subcommand: what it offers
        return EXIT_USAGE
    where = ctx.command_path if ctx is not None else "healthfsm"
    message = " ".join(error.format_message().replace("Value error, ", "").split())
    hint = " (see --help)" if error.exit_code == EXIT_USAGE else ""
    _say(f"{where}: error: {message}{hint}")
    return error.exit_code


def _run(argv: list[str] | None) -> int:
    """Run the app and map every known failure to one line and its exit code."""
    try:
        result = app(args=argv, prog_name="healthfsm", standalone_mode=False)
    except TyperException as error:  # typer's own (vendored click) usage errors
        return _usage_error(error)
    except (typer.Abort, KeyboardInterrupt):
        _say("healthfsm: interrupted")
        return 130
    except HealthFsmError as error:
        _say(f"healthfsm: error: {error}")
        return _exit_code(error)
    except redis.AuthenticationError as error:
        _say(
            f"healthfsm: error: redis authentication failed ({error}); check the URL's user"
            f" and password or {c.ENV_REDIS_PASSWORD}"
        )
        return EXIT_ERROR
    except (OSError, ValueError, redis.RedisError) as error:
        _say(f"healthfsm: error: {error}")
        return EXIT_ERROR
    return result if isinstance(result, int) else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, then give the log writer a bounded time.

    A writer still stuck on a stderr that nobody reads must not keep the process alive:
    the interpreter's shutdown would wait on that stream's lock for ever, so the process
    leaves with ``os._exit`` (stdout flushed first) and the code it would have returned.
    """
    code = _run(argv)
    if not logs.close():
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
