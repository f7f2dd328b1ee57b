"""``healthfsm diagram``, ``demo`` and ``bench``: the machine drawn, shown on a built-in
scenario, and measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from consumer.cli.options import DEFAULT_DB, DbOption
from consumer.runtime import logs
from consumer.settings import default


def diagram(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option(metavar="DIR", help="Directory to write the diagram files into.")
    ] = Path("diagrams"),
    traffic: Annotated[
        bool,
        typer.Option(
            "--traffic",
            help="Draw the edges with how often the store's workers took them (files of their"
            " own: runtime_status.traffic.*, runtime_admin.traffic.*). Read-only.",
        ),
    ] = False,
    db: DbOption = DEFAULT_DB,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="With --traffic: the last DURATION only (90m, 12h, 7d, 2w; whole hours);"
            " default: every hour kept (90 days).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --traffic: print the counts as JSON instead.")
    ] = False,
) -> None:
    """Write the status machine as Mermaid (and SVG when Graphviz's dot is installed); with
    --traffic, the same edges with production's counts from the store."""
    if not traffic:
        source = ctx.get_parameter_source("db")  # typer's own click: compare by name
        given_db = source is not None and source.name == "COMMANDLINE"
        if since is not None or as_json or given_db:
            hint = "--since" if since is not None else "--json" if as_json else "--db"
            raise typer.BadParameter("only with --traffic", param_hint=hint)
        from consumer.operations.diagrams import write_diagrams

        written = write_diagrams(out)
    else:
        written = _traffic_diagrams(out, db, since, as_json)
        if as_json:
            return
    for path in written:
        typer.echo(str(path))
    if not any(path.suffix == ".svg" for path in written):
        typer.echo("healthfsm: note: Graphviz's dot is not installed; SVG not written", err=True)


def _traffic_diagrams(out: Path, db: str, since: str | None, as_json: bool) -> list[Path]:
    from consumer.cli.common import now_ms, opened
    from consumer.operations.diagrams import write_traffic
    from consumer.operations.traffic import parse_duration, read_traffic
    from statemachine.traffic_diagram import traffic_diagrams, unknown_count

    try:
        since_s = parse_duration(since) if since is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--since") from None
    with opened(db, read_only=True) as database:
        report = read_traffic(database, since_s, now_ms())
    if as_json:
        typer.echo(json.dumps(report.as_json()))
        return []
    unknown = unknown_count(report.counts)
    if unknown:
        typer.echo(
            f"healthfsm: note: {unknown:,} counted on edges this release's table does not have"
            " (a newer release wrote them); not drawn, listed by --json",
            err=True,
        )
    return write_traffic(out, traffic_diagrams(report.counts, report.window()))


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
    from consumer.devtools.bench import BenchConfig, run_bench
    from consumer.display import bench_report
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

    from consumer.devtools.bench_shared import SharedConfig, run_shared
    from consumer.display import shared_bench_report

    cfg = SharedConfig(workers, partitions, events, games, batch_size, seed, db)
    say = (lambda line: None) if as_json else (lambda line: typer.echo(f"... {line}", err=True))
    report = run_shared(cfg, redis_url, say)
    if as_json:
        typer.echo(json.dumps(asdict(report), indent=2))
    else:
        shared_bench_report(report)
