"""Output for people: aligned, coloured tables with rich (scripts use ``--json``)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

STATUS_STYLES = {
    "starting": "cyan",
    "running": "green",
    "generation_in_progress": "blue",
    "generation_failed": "red",
    "engine_unreachable": "bold red",
    "stopped": "dim",
    "finished": "magenta",
}
HEALTH_STYLES = {"healthy": "green", "": "dim"}


def records_table(rows: Sequence[dict[str, object]], title: str | None = None) -> None:
    """Print runtime records as a table on stdout."""
    table = Table(title=title)
    for name in ("game_id", "status", "engine_health", "current_turn", "updated_at_ms"):
        table.add_column(
            name, justify="right" if name in {"current_turn", "updated_at_ms"} else "left"
        )
    for row in rows:
        status = str(row["status"])
        health = str(row["engine_health"])
        table.add_row(
            str(row["game_id"]),
            f"[{STATUS_STYLES.get(status, '')}]{status}[/]" if status in STATUS_STYLES else status,
            f"[{HEALTH_STYLES.get(health, 'yellow')}]{health or '-'}[/]",
            str(row["current_turn"]),
            str(row["updated_at_ms"]),
        )
    Console().print(table)


def rows_table(rows: Sequence[dict[str, object]], columns: Sequence[str], title: str) -> None:
    """Print arbitrary rows (snapshots, dead letters) as a plain table."""
    table = Table(title=title)
    for name in columns:
        table.add_column(name)
    for row in rows:
        table.add_row(*(str(row.get(name, "")) for name in columns))
    Console().print(table)
