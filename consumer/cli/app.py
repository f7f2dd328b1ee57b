"""The ``healthfsm`` command line: thin commands that open the store, call one function, and
turn known errors into a one-line message and an exit code."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import psycopg
import redis
import typer
from typer.exceptions import TyperException

from consumer.cli import logs
from consumer.cli.common import (
    EXIT_CONFLICT,
    EXIT_ERROR,
    EXIT_NOT_ALLOWED,
    EXIT_OK,
    EXIT_USAGE,
    LabelOption,
    LobbyOption,
    StreamOption,
    now_ms,
    opened,
    settings_for,
)
from consumer.cli.options import DEFAULT_DB, DbOption, RedisOptions, setting, with_redis_options
from consumer.contract import constants as c
from consumer.errors import CheckFailed
from consumer.runtime import faults, log_queue
from consumer.runtime.health import HealthState
from consumer.settings import ConsumerSettings, ResetPolicy, default
from statemachine import Status
from statemachine.errors import HealthFsmError, StatusConflict, TransitionNotAllowed
from store.backend import Store
from store.errors import GameExists, GameNotFound

ENV_INJECT_FAULT = "HEALTHFSM_INJECT_FAULT"
"""Test hook: ``POINT[:N][:exit]`` makes ``consume`` fail at a batch step (see
``consumer.runtime.faults``)."""
ENV_TEST_HOOKS = "HEALTHFSM_TEST_HOOKS"
"""Test-only switch: ``HEALTHFSM_INJECT_FAULT`` is honoured only when this is ``1``."""


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


runtime_app = typer.Typer(
    help="Inspect and administer runtime records.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(runtime_app, name="runtime")


def _arm_test_hooks() -> None:
    """Arm ``HEALTHFSM_INJECT_FAULT`` for crash tests, only behind the test-only switch."""
    spec = os.environ.get(ENV_INJECT_FAULT)
    if not spec:
        return
    if os.environ.get(ENV_TEST_HOOKS) != "1":
        raise typer.BadParameter(
            f"{ENV_INJECT_FAULT} is a test hook that crashes the worker on purpose;"
            f" it is honoured only with {ENV_TEST_HOOKS}=1",
            param_hint=ENV_INJECT_FAULT,
        )
    faults.arm_from_spec(spec)
    logging.getLogger("consumer.runtime.faults").warning("test hook armed: %s", spec)


@app.command()
@with_redis_options
def consume(
    redis: RedisOptions,
    stream: StreamOption = default("stream"),
    lobby_stream: LobbyOption = default("lobby_stream"),
    label: LabelOption = default("label"),
    db: DbOption = DEFAULT_DB,
    block_ms: Annotated[int, setting("block_ms", metavar="MS")] = default("block_ms"),
    batch_size: Annotated[int, setting("batch_size", metavar="N")] = default("batch_size"),
    drain: Annotated[bool, setting("drain", metavar="")] = default("drain"),
    give_up_after: Annotated[float, setting("give_up_after_s", metavar="SECONDS")] = default(
        "give_up_after_s"
    ),
    log_level: Annotated[
        str, setting("log_level", metavar="LEVEL", case_sensitive=False)
    ] = default("log_level"),
    log_format: Annotated[str, setting("log_format", metavar="FORMAT")] = default("log_format"),
    metrics_port: Annotated[int | None, setting("metrics_port", metavar="PORT")] = default(
        "metrics_port"
    ),
    metrics_host: Annotated[str, setting("metrics_host", metavar="HOST")] = default("metrics_host"),
    lease_ttl: Annotated[float, setting("lease_ttl_s", metavar="SECONDS")] = default("lease_ttl_s"),
    redis_timeout: Annotated[
        float | None, setting("redis_timeout_s", metavar="SECONDS")
    ] = default("redis_timeout_s"),
    on_stream_reset: Annotated[ResetPolicy, setting("on_stream_reset", metavar="stop|rewind")] = (
        default("on_stream_reset")
    ),
    start_from: Annotated[str | None, setting("start_from", metavar="beginning|end|ID")] = default(
        "start_from"
    ),
) -> None:
    """Consume health events into the store and publish runtime snapshots."""
    settings = settings_for(
        db,
        redis,
        stream=stream,
        lobby_stream=lobby_stream,
        label=label,
        block_ms=block_ms,
        batch_size=batch_size,
        drain=drain,
        give_up_after_s=give_up_after,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        lease_ttl_s=lease_ttl,
        redis_timeout_s=redis_timeout,
        on_stream_reset=on_stream_reset,
        start_from=start_from,
    )
    logs.configure(settings.log_level, settings.log_format)
    _arm_test_hooks()
    _consume(settings)


def _consume(settings: ConsumerSettings) -> None:
    """Serve the probes first (they answer while the store is away), open the store, run."""
    from consumer.runtime.http_endpoints import serve
    from consumer.runtime.metrics import Metrics
    from consumer.runtime.worker import Worker, health_for

    metrics, health = Metrics(), health_for(settings)
    port = None
    if settings.metrics_port is not None:
        port = serve(metrics.registry, health, settings.metrics_port, settings.metrics_host)
    database = _open_unless_stopped(settings, health)
    if database is None:
        return  # a signal while the database was unreachable: nothing was started
    try:
        progress = settings.drain and sys.stderr.isatty()
        observers = []
        if progress:
            from consumer.cli.render import drain_progress

            observers.append(drain_progress(metrics))
        worker = Worker(
            settings,
            database,
            metrics=metrics,
            health=health,
            observers=observers,
            metrics_port=port,
        )
        worker.install_signal_handlers()
        try:
            worker.run()
        finally:
            if progress:
                sys.stderr.write("\n")  # end the live line before anything else is printed
    finally:
        database.close()


def _open_unless_stopped(settings: ConsumerSettings, health: HealthState) -> Store | None:
    """The worker's store, waiting while its server is unreachable; None if SIGINT or
    SIGTERM came first (the worker installs its own handlers once it exists)."""
    import signal
    import threading

    from consumer.runtime.open_store import open_when_reachable

    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return open_when_reachable(settings, stop, health)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@runtime_app.command("add")
def runtime_add(
    game_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="GAME_ID...", help="The games' ids, used verbatim."),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            metavar="PATH",
            help="Also register the ids in this file, one per line (- reads standard input).",
            allow_dash=True,
        ),
    ] = None,
    status: Annotated[Status, typer.Option(help="Initial status.")] = Status.RUNNING,
    turn: Annotated[int, typer.Option(metavar="N", min=0, help="Current turn.")] = 0,
    db: DbOption = DEFAULT_DB,
) -> None:
    """Register games' runtime records, all in one transaction or none: an id given twice
    or already registered is refused by name. Prints one JSON object per record."""
    from store.admin import add_games
    from store.records import as_dict

    ids = [*(game_ids or []), *(read_ids(from_file) if from_file is not None else [])]
    if not ids:
        raise typer.BadParameter("give at least one GAME_ID, or --from-file PATH")
    if any(not game_id.strip() for game_id in ids):
        raise typer.BadParameter("must not be blank", param_hint="GAME_ID")
    with opened(db, create=True) as database:
        added = add_games(database, ids, status, turn, now_ms())
    typer.echo("\n".join(json.dumps(as_dict(record)) for record in added))


def read_ids(path: Path) -> list[str]:
    """The game ids in ``path`` (``-``: standard input), one per line, verbatim; blank lines
    are skipped."""
    if str(path) == "-":
        text = sys.stdin.read()
    elif not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint="--from-file")
    else:
        text = path.read_text()
    return [line for line in text.splitlines() if line.strip()]


@runtime_app.command("show")
def runtime_show(
    game_id: Annotated[str, typer.Argument(metavar="GAME_ID", help="The game's id.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Print one runtime record as a JSON object."""
    from store import records

    with opened(db, read_only=True) as database:
        record = records.get(database.conn, game_id)
    typer.echo(json.dumps(records.as_dict(record)))


@runtime_app.command("list")
def runtime_list(
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array instead of a table.", metavar="")
    ] = False,
    status: Annotated[Status | None, typer.Option(help="Only records in this status.")] = None,
) -> None:
    """List runtime records (a table for people, --json for scripts)."""
    from consumer.cli.render import records_table
    from store import records

    with opened(db, read_only=True) as database:
        rows = [records.as_dict(r) for r in records.iter_all(database.conn, status)]
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        records_table(rows)


@runtime_app.command("set-status")
def runtime_set_status(
    game_id: Annotated[str, typer.Argument(metavar="GAME_ID", help="The game's id.")],
    from_status: Annotated[Status, typer.Option("--from", help="The status it must be in now.")],
    to_status: Annotated[Status, typer.Option("--to", help="The status to move it to.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Admin compare-and-swap of a game's status through the transition table; the change
    is published to Game Lobby by the running worker."""
    from store.admin import set_status
    from store.records import as_dict

    with opened(db) as database:
        record = set_status(database, game_id, from_status, to_status, now_ms())
    typer.echo(json.dumps(as_dict(record)))


@app.command()
def init(db: DbOption = DEFAULT_DB) -> None:
    """Create an empty healthfsm store (or confirm that the file or schema already is one)."""
    from store import SCHEMA_VERSION, is_postgres_url

    existed = _store_exists(db)
    with opened(db, create=True) as database:
        location = database.location
    state = "already a healthfsm store" if existed else "created"
    shown = location if is_postgres_url(db) else db
    typer.echo(json.dumps({"db": shown, "state": state, "schema_version": SCHEMA_VERSION}))


def _store_exists(db: str) -> bool:
    from store import is_postgres_url, open_database
    from store.errors import StoreMissing

    if not is_postgres_url(db):
        return Path(db).exists()
    try:
        open_database(db, upgrade=False).close()
    except StoreMissing:
        return False
    return True


@app.command()
def migrate(
    db: DbOption = DEFAULT_DB,
    from_sqlite: Annotated[
        Path | None,
        typer.Option(
            "--from-sqlite",
            metavar="PATH",
            help="Copy this SQLite store into --db (a postgresql:// URL): records with the"
            " debounce state, offsets, partition counts, leases (so epochs go on), dead"
            " letters and history.",
        ),
    ] = None,
) -> None:
    """Bring a store's schema up to date, or move a SQLite store into PostgreSQL."""
    from store import SCHEMA_VERSION, is_postgres_url, open_database

    if from_sqlite is not None:
        if not is_postgres_url(db):
            raise typer.BadParameter("--from-sqlite needs a postgresql:// URL", param_hint="--db")
        from store.transfer import copy_sqlite_store

        typer.echo(json.dumps(copy_sqlite_store(from_sqlite, db)))
        return
    database = open_database(db, upgrade=False, create=is_postgres_url(db))
    try:
        before = database.schema_version()
        applied = database.migrate()
        location = database.location
    finally:
        database.close()
    shown = location if is_postgres_url(db) else db
    typer.echo(
        json.dumps(
            {"db": shown, "from_version": before, "to_version": SCHEMA_VERSION, "applied": applied}
        )
    )


@app.command()
def diagram(
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory to write the diagram files into.")
    ] = Path("diagrams"),
) -> None:
    """Write the status machine as Mermaid (and SVG when Graphviz's dot is installed)."""
    from consumer.cli.diagram_files import write_diagrams

    written = write_diagrams(out)
    for path in written:
        typer.echo(str(path))
    if not any(path.suffix == ".svg" for path in written):
        typer.echo("healthfsm: note: Graphviz's dot is not installed; SVG not written", err=True)


@app.command()
def demo(
    db: Annotated[
        str | None,
        typer.Option(
            metavar="PATH", help="Keep the demo's SQLite file here (default: a temp file)."
        ),
    ] = None,
    postgres: Annotated[
        bool,
        typer.Option(
            "--postgres",
            help="Run on a private PostgreSQL from the pgserver wheel ('demo' extra),"
            " removed at the end.",
        ),
    ] = False,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep",
            help="With --postgres: keep PostgreSQL and Redis running for a trial of your own"
            " (their URLs are printed) until Ctrl-C, then remove them.",
        ),
    ] = False,
) -> None:
    """Run the consumer on a built-in scenario against a private Redis, and show the result."""
    from consumer.devtools.demo import run_demo
    from store import is_postgres_url

    if db is not None and is_postgres_url(db):
        raise typer.BadParameter(
            "the demo runs on a SQLite file of its own; give a path", param_hint="--db"
        )
    if db is not None and postgres:
        raise typer.BadParameter(
            "--postgres runs on a server of its own; leave --db out", param_hint="--db"
        )
    if keep and not postgres:
        raise typer.BadParameter(
            "keeps the demo's PostgreSQL running, so it needs --postgres", param_hint="--keep"
        )
    run_demo(None if db is None else Path(db), postgres=postgres, keep=keep)


@app.command()
def bench(
    redis_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Redis to use for scratch streams (default: a private one)."
        ),
    ] = None,
    events: Annotated[
        int, typer.Option(metavar="N", min=1000, help="Events in the drain workload.")
    ] = 200_000,
    games: Annotated[
        int, typer.Option(metavar="N", min=1, help="Registered games they spread over.")
    ] = 10_000,
    batch_size: Annotated[
        int, typer.Option(metavar="N", min=1, max=100_000, help="Batch size of the timed drain.")
    ] = default("batch_size"),
    single_events: Annotated[
        int,
        typer.Option(
            metavar="N", min=100, help="Events drained with --batch-size 1 for the ratio."
        ),
    ] = 20_000,
    rate: Annotated[
        int, typer.Option(metavar="N", min=1, help="Offered events/s for the latency run.")
    ] = 5000,
    steady_seconds: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0, help="Length of the latency run (0 skips it)."),
    ] = 10.0,
    memory_events: Annotated[
        int,
        typer.Option(
            metavar="N", min=0, help="Events over as many games for peak RSS (0 skips it)."
        ),
    ] = 1_000_000,
    seed: Annotated[int, typer.Option(metavar="N", help="Workload random seed.")] = 1,
    rounds: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            max=20,
            help="Repeat the throughput measurements and report medians (for noisy machines).",
        ),
    ] = 1,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON.", metavar="")
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            metavar="URL",
            help="Measure PostgreSQL: a postgresql:// URL where the role may create schemas"
            " (scratch schemas, dropped afterwards). Default: temporary SQLite files.",
        ),
    ] = None,
    workers: Annotated[
        list[int] | None,
        typer.Option(
            "--workers",
            metavar="K",
            min=1,
            max=16,
            help="Measure K worker processes sharing one stream by partition instead (repeat"
            " for several K; K=1 is always measured too).",
        ),
    ] = None,
    partitions: Annotated[
        int,
        typer.Option("--partitions", metavar="N", min=1, max=256, help="Partitions for --workers."),
    ] = 8,
) -> None:
    """Measure drain throughput, the batch-size-1 ratio, the bare floor, latency and memory;
    with --workers, the drain and each worker's CPU when several share the stream."""
    from consumer.cli.render import bench_report
    from consumer.devtools.bench import BenchConfig, run_bench
    from store import is_postgres_url

    if db is not None and not is_postgres_url(db):
        raise typer.BadParameter(
            "takes a postgresql:// URL; SQLite is measured on temporary files", param_hint="--db"
        )
    logs.configure("ERROR")
    if workers:
        _bench_shared(workers, partitions, events, games, batch_size, seed, db, redis_url, as_json)
        return
    cfg = BenchConfig(
        events,
        games,
        batch_size,
        single_events,
        rate,
        steady_seconds,
        memory_events,
        seed,
        rounds,
        db,
    )
    say = (lambda line: None) if as_json else (lambda line: typer.echo(f"... {line}", err=True))
    report = run_bench(cfg, redis_url, say)
    if as_json:
        from dataclasses import asdict

        typer.echo(json.dumps(asdict(report), indent=2))
    else:
        bench_report(report)


def _bench_shared(
    workers: list[int],
    partitions: int,
    events: int,
    games: int,
    batch_size: int,
    seed: int,
    db: str | None,
    redis_url: str | None,
    as_json: bool,
) -> None:
    from dataclasses import asdict

    from consumer.cli.render import shared_bench_report
    from consumer.devtools.bench_shared import SharedConfig, run_shared

    cfg = SharedConfig(workers, partitions, events, games, batch_size, seed, db)
    say = (lambda line: None) if as_json else (lambda line: typer.echo(f"... {line}", err=True))
    report = run_shared(cfg, redis_url, say)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
    else:
        shared_bench_report(report)


from consumer.cli import operator_commands  # noqa: E402  (registers the operator commands)

operator_commands.register(app, runtime_app)

_EXIT_CODES: list[tuple[type[HealthFsmError], int]] = [
    (StatusConflict, EXIT_CONFLICT),
    (TransitionNotAllowed, EXIT_NOT_ALLOWED),
    (GameNotFound, EXIT_ERROR),
    (GameExists, EXIT_ERROR),
    (CheckFailed, EXIT_ERROR),
]


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
    except (OSError, ValueError, sqlite3.Error, psycopg.Error, redis.RedisError) as error:
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
