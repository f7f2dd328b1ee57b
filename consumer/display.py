"""Output for people: aligned, coloured tables with rich (scripts use ``--json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from consumer.runtime.clock import format_ms

STATUS_STYLES = {
    "starting": "cyan",
    "running": "green",
    "generation_in_progress": "blue",
    "generation_failed": "red",
    "engine_unreachable": "bold red",
    "stopped": "dim",
    "finished": "magenta",
}
if TYPE_CHECKING:
    from collections.abc import Callable

    from consumer.devtools.bench import BenchReport
    from consumer.devtools.bench_shared import SharedReport
    from consumer.runtime.batch import BatchResult
    from consumer.runtime.metrics import Metrics

HEALTH_STYLES = {"healthy": "green", "": "dim"}

PIPE_WIDTH = 4096
"""Columns for output that is not a terminal: rows stay whole for grep and files."""


def console() -> Console:
    """Rich's console: the terminal's width, or a wide page when stdout is a pipe or file
    (rich would otherwise fold every table at 80 columns and split ids across lines)."""
    import sys

    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)


def _is_time(name: str) -> bool:
    return name == "at_ms" or name.endswith("_at_ms")


def _heading(name: str) -> str:
    """``updated_at_ms`` is shown as ``updated_at (UTC)``: tables show times, not counts."""
    return f"{name.removesuffix('_ms')} (UTC)" if _is_time(name) else name


def _cell(name: str, value: object) -> str:
    if _is_time(name) and isinstance(value, int) and value > 0:
        return format_ms(value)
    return "-" if value is None else str(value)


def records_table(rows: Sequence[dict[str, object]], title: str | None = None) -> None:
    """Print runtime records as a table on stdout (``--json`` keeps epoch milliseconds)."""
    table = Table(title=title)
    for name in ("game_id", "status", "engine_health", "current_turn", "updated_at_ms"):
        table.add_column(
            _heading(name),
            justify="right" if name == "current_turn" else "left",
            overflow="fold",  # a narrow terminal wraps, never cuts
        )
    for row in rows:
        status = str(row["status"])
        health = str(row["engine_health"])
        table.add_row(
            str(row["game_id"]),
            f"[{STATUS_STYLES.get(status, '')}]{status}[/]" if status in STATUS_STYLES else status,
            f"[{HEALTH_STYLES.get(health, 'yellow')}]{health or '-'}[/]",
            str(row["current_turn"]),
            _cell("updated_at_ms", row["updated_at_ms"]),
        )
    console().print(table)


def rows_table(rows: Sequence[dict[str, object]], columns: Sequence[str], title: str) -> None:
    """Print arbitrary rows (snapshots, dead letters) as a plain table; times in UTC."""
    table = Table(title=title)
    for name in columns:
        table.add_column(_heading(name), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(name, row.get(name, "")) for name in columns))
    console().print(table)


WIDE_ENOUGH = 140
"""Columns the explained history needs as a table; below it, one block per change."""


def explained_history(rows: Sequence[dict[str, object]], title: str) -> None:
    """A record's changes with the rule each applied and its effect (``--explain``): a
    table on a wide terminal or a pipe, one block per change on a narrow one (eight
    columns squeezed into 80 split ids and statuses over lines)."""
    from rich.markup import escape

    from consumer.operations.history import snapshot_words

    out = console()
    if out.width < WIDE_ENOUGH:
        out.print(escape(title), highlight=False)
        for row in rows:
            head = f"{row['entry_id']}  {row['cause']}  {_cell('at_ms', row['at_ms'])}"
            out.print(f"\n[bold]{escape(head)}[/]", highlight=False)
            out.print(escape(f"  rule: {row['rule']}: {row['why']}"), highlight=False)
            effect = (
                f"  status: {row['status']}; summary: {row['engine_health'] or '-'};"
                f" snapshot: {snapshot_words(row['snapshot'])}"
            )
            out.print(escape(effect), highlight=False)
        return
    table = Table(title=title)
    for name in ("entry id", "event", "rule", "why", "status", "summary", "snapshot", "at (UTC)"):
        table.add_column(name, overflow="fold")
    for row in rows:
        cells = (
            row["entry_id"],
            row["cause"],
            row["rule"],
            row["why"],  # "[cas]" is text here, not rich markup
            row["status"],
            row["engine_health"] or "-",
            snapshot_words(row["snapshot"]),
            _cell("at_ms", row["at_ms"]),
        )
        table.add_row(*(escape(str(cell)) for cell in cells))
    out.print(table)


def bench_report(report: BenchReport) -> None:
    """Print the benchmark's figures and which targets hold."""
    cfg = report.config
    title = (
        f"healthfsm bench ({report.backend}): {cfg['events']:,} events over {cfg['games']:,} games"
    )
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = []
    if len(report.rounds) > 1:
        drains = sorted(r["drain_events_per_s"] for r in report.rounds)
        rows.append(
            (
                f"throughput: median of {len(report.rounds)} rounds",
                f"drain {drains[0]:,.0f} .. {drains[-1]:,.0f} events/s",
            )
        )
    rows += [
        (f"drain, --batch-size {cfg['batch_size']}", f"{report.drain_events_per_s:,.0f} events/s"),
        ("  snapshots per event", f"{report.snapshot_share:.0%}"),
        ("  rejected (dead letters)", f"{report.rejected:,}"),
        (
            f"drain, --batch-size 1 ({cfg['single_events']:,} events)",
            f"{report.single_events_per_s:,.0f} events/s",
        ),
        ("  ratio", f"{report.ratio_vs_single:.1f}x"),
        ("bare floor (XREAD 1000 + executemany)", f"{report.floor_events_per_s:,.0f} events/s"),
        ("  drain / floor", f"{report.share_of_floor:.0%}"),
    ]
    if report.steady_latency_ms:
        lat = report.steady_latency_ms
        rows.append(("steady load offered", f"{report.steady_offered_per_s:,.0f} events/s"))
        rows.append(
            (
                "  XADD -> commit p50 / p90 / p99 / max",
                f"{lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']} ms",
            )
        )
    if report.memory_events:
        rows.append(
            (
                f"peak RSS, {report.memory_events:,} events over as many games",
                f"{report.memory_peak_rss_mb:.0f} MB",
            )
        )
        rows.append(
            ("  drain rate (separate process)", f"{report.memory_drain_events_per_s:,.0f} events/s")
        )
    for name, value in rows:
        table.add_row(name, value)
    out = console()
    out.print(table)
    for target, held in report.targets.items():
        out.print(f"  [{'green' if held else 'red'}]{'met' if held else 'MISSED'}[/] {target}")


def shared_bench_report(report: SharedReport) -> None:
    """Print the shared-stream figures: per K, the drain and each worker's CPU split."""
    cfg = report.config
    table = Table(
        title=f"healthfsm bench --workers ({report.backend}): {cfg['events']:,} events,"
        f" {cfg['partitions']} partitions"
    )
    for name in ("K", "drain events/s", "worker", "applied", "CPU ms/1k", "apply", "read+skip"):
        table.add_column(name, justify="right")
    for run in report.runs:
        for index, w in enumerate(run.per_worker):
            first = index == 0
            table.add_row(
                str(run.workers) if first else "",
                f"{run.events_per_s:,}" if first else "",
                str(index + 1),
                f"{w.applied:,}",
                f"{w.cpu_ms:.1f}",
                f"{w.apply_ms:.1f}",
                f"{w.read_skip_ms:.1f}",
            )
    out = console()
    out.print(table)
    out.print(
        f"  one worker: {report.one_worker_cpu_ms:.1f} ms CPU per 1,000 entries; reading and"
        f" skipping an entry of another partition: {report.skip_cost_ms:.2f} ms per 1,000"
    )
    for target, held in report.targets.items():
        out.print(f"  [{'green' if held else 'red'}]{'met' if held else 'MISSED'}[/] {target}")


def drain_progress(metrics: Metrics) -> Callable[[BatchResult, float], None]:
    """An observer that keeps one status line on stderr while ``consume --drain`` runs."""
    import sys
    import time

    from consumer.runtime.status import Totals

    started = time.monotonic()

    def show(result: BatchResult, _: float) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        total = Totals(metrics)
        sys.stderr.write(
            f"\r  drained {total.entries:,} entries ({total.entries / elapsed:,.0f}/s),"
            f" {total.rejected:,} rejected, offset {result.last_entry_id}   "
        )
        sys.stderr.flush()

    return show
