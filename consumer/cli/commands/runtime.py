"""``healthfsm runtime``: register, inspect and administer runtime records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from consumer.cli.common import (
    JsonFlag,
    now_ms,
    opened,
)
from consumer.cli.options import DEFAULT_DB, DbOption
from statemachine import Status

app = typer.Typer(
    help="Inspect and administer runtime records.", no_args_is_help=True, rich_markup_mode=None
)


@app.command("add")
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


@app.command("show")
def runtime_show(
    game_id: Annotated[str, typer.Argument(metavar="GAME_ID", help="The game's id.")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Print one runtime record as a JSON object."""
    from store import records

    with opened(db, read_only=True) as database:
        record = records.get(database.conn, game_id)
    typer.echo(json.dumps(records.as_dict(record)))


@app.command("list")
def runtime_list(
    db: DbOption = DEFAULT_DB,
    as_json: Annotated[
        bool, typer.Option("--json", help="A JSON array instead of a table.", metavar="")
    ] = False,
    status: Annotated[Status | None, typer.Option(help="Only records in this status.")] = None,
) -> None:
    """List runtime records (a table for people, --json for scripts)."""
    from consumer.display import records_table
    from store import records

    with opened(db, read_only=True) as database:
        rows = [records.as_dict(r) for r in records.iter_all(database.conn, status)]
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        records_table(rows)


@app.command("set-status")
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


@app.command("history")
def runtime_history(
    game_id: Annotated[str, typer.Argument(metavar="GAME_ID", help="The game's id.")],
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="For each change, the rule of the table that applied (cas, summary_only,"
            " admin), in words, and its effect: status, summary, snapshot.",
        ),
    ] = False,
    db: DbOption = DEFAULT_DB,
    as_json: JsonFlag = False,
) -> None:
    """The status transitions and summaries applied to a game, with the entry id of each."""
    from consumer.display import explained_history, rows_table
    from consumer.operations.history import explain as explained
    from store import history, records

    with opened(db, read_only=True) as database:
        records.get(database.conn, game_id)  # GameNotFound for an unknown id
        rows = history.for_game(database.conn, game_id)
    if explain:
        rows = explained(rows)
        if as_json:
            typer.echo(json.dumps(rows))
        else:
            explained_history(rows, f"history of {game_id}, explained")
        return
    plain = [{k: v for k, v in row.items() if k not in ("rule", "snapshot")} for row in rows]
    if as_json:
        typer.echo(json.dumps(plain))
    else:
        rows_table(
            plain,
            ["id", "entry_id", "cause", "from_status", "to_status", "engine_health", "at_ms"],
            f"history of {game_id}",
        )
