"""``healthfsm demo``: the whole pipeline on a scripted burst, against a private Redis.

Registers a few games, writes a burst of health events (including a CAS miss, a repeated
summary that the debounce swallows, a malformed entry and an unknown game), drains them
with the real worker and prints the records, the published snapshots and the dead letters.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import redis

from consumer.cli import logs
from consumer.cli.render import console as render_console
from consumer.cli.render import records_table, rows_table
from consumer.contract import constants as c
from consumer.contract.codec import decode_snapshot
from consumer.devtools import embedded
from consumer.errors import DemoRefused
from consumer.runtime.worker import Worker, wall_clock_ms
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import dead_letters, open_database, records
from store.admin import add_game

GAMES: list[tuple[str, Status, int]] = [
    ("game-alpha", Status.RUNNING, 12),
    ("game-beta", Status.RUNNING, 3),
    ("game-gamma", Status.GENERATION_IN_PROGRESS, 40),
    ("game-delta", Status.ENGINE_UNREACHABLE, 7),
]

BURST: list[tuple[str, str]] = [
    ("game-alpha", "container_started"),
    ("game-beta", "container_started"),
    ("game-beta", "probe_failed"),
    ("game-beta", "probe_failed"),  # same summary again: debounced, no snapshot
    ("game-alpha", "container_exited"),  # running -> engine_unreachable
    ("game-gamma", "container_oom"),  # CAS miss: generation holds the status; summary only
    ("game-delta", "probe_recovered"),  # engine_unreachable -> running
    ("game-alpha", "probe_recovered"),  # engine_unreachable -> running
    ("game-omega", "probe_failed"),  # no such game: dead letter
    ("game-beta", "inspect_unhealthy"),
]


def _seed_stream(client: redis.Redis) -> None:
    now = wall_clock_ms()
    for offset, (game_id, event_type) in enumerate(BURST):
        client.xadd(
            c.HEALTH_STREAM,
            {"game_id": game_id, "event_type": event_type, "occurred_at_ms": str(now + offset)},
        )
        if offset == 5:
            client.xadd(
                c.HEALTH_STREAM,
                {"game_id": "game-beta", "event_type": "probe_failed", "occurred_at_ms": "soon"},
            )


def _refuse_a_real_store(path: Path) -> None:
    """The demo registers games and moves the offset to now: never in someone's store."""
    if not path.exists():
        return
    db = open_database(path, read_only=True)
    try:
        games = db.conn.execute("SELECT count(*) FROM runtime_records").fetchone()[0]
        labels = db.conn.execute("SELECT count(*) FROM stream_offsets").fetchone()[0]
    finally:
        db.close()
    if games or labels:
        raise DemoRefused(
            f"{path} already holds {games} games and {labels} offsets; the demo registers"
            " its own games and moves the offset, so give it a new file (or none)"
        )


def run_demo(db_path: Path | None) -> None:
    """Run the scenario and print what happened."""
    if db_path is not None:
        _refuse_a_real_store(db_path)
    console = render_console()
    logs.configure("WARNING")
    with tempfile.TemporaryDirectory(prefix="healthfsm-demo-") as tmp, embedded.running() as server:
        path = db_path or Path(tmp) / "demo.db"
        db = open_database(path, create=True)
        for game_id, status, turn in GAMES:
            add_game(db, game_id, status, turn, wall_clock_ms())
        console.print(f"[bold]healthfsm demo[/]: private Redis at {server.url}, database {path}")
        records_table([records.as_dict(r) for r in records.iter_all(db.conn)], "registered games")
        client = redis.Redis.from_url(server.url)
        _seed_stream(client)
        console.print(f"wrote {client.xlen(c.HEALTH_STREAM)} entries to {c.HEALTH_STREAM}")
        settings = ConsumerSettings(redis_url=server.url, db_path=str(path), drain=True)
        worker = Worker(settings, db)
        worker.run()
        t = worker.totals
        console.print(
            f"consumed {t.entries} entries: {t.applied} applied, {t.rejected} rejected,"
            f" {t.snapshots_published} snapshots published"
        )
        records_table([records.as_dict(r) for r in records.iter_all(db.conn)], "runtime records")
        published: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(c.LOBBY_STREAM)  # type: ignore[assignment]
        snapshots = [decode_snapshot(fields).model_dump(mode="json") for _, fields in published]
        rows_table(
            snapshots,
            [
                "source_entry_id",
                "game_id",
                "runtime_status",
                "engine_health_summary",
                "current_turn",
            ],
            f"{c.LOBBY_STREAM} (runtime_snapshot_update)",
        )
        rows_table(
            dead_letters.list_recent(db.conn, limit=20)[::-1],
            ["entry_id", "reason", "detail"],
            "dead letters",
        )
        client.close()
        db.close()
