"""``healthfsm demo``: the whole pipeline on a scripted burst, against a private Redis.

Registers a few games, writes a burst of health events (a status change and its recovery,
a CAS miss, a repeated summary that the debounce swallows, a malformed entry and an unknown
game), drains them with the real worker and prints each entry with what it showed, then the
records, the published snapshots and the dead letters. What an entry showed is read back
from the run (history, dead letters, the lobby stream), never assumed from the script.

``--postgres`` runs the same on a private PostgreSQL from the ``pgserver`` wheel, and
``--keep`` leaves it (and the Redis) running for a trial of one's own until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import NamedTuple

import redis
from rich.console import Console

from consumer.contract import constants as c
from consumer.contract.codec import decode_snapshot
from consumer.devtools import embedded, embedded_pg
from consumer.display import console as render_console
from consumer.display import records_table, rows_table
from consumer.errors import DemoRefused
from consumer.runtime import logs
from consumer.runtime.worker import Worker, wall_clock_ms
from consumer.settings import ConsumerSettings
from statemachine import REACTIONS, EventType, Status
from store import Store, dead_letters, history, offsets, open_database, records
from store.admin import add_game
from store.postgres import create_schema

GAMES: list[tuple[str, Status, int]] = [
    ("game-alpha", Status.RUNNING, 12),
    ("game-beta", Status.RUNNING, 3),
    ("game-gamma", Status.GENERATION_IN_PROGRESS, 40),
    ("game-delta", Status.ENGINE_UNREACHABLE, 7),
]


class Scripted(NamedTuple):
    """One entry of the burst; ``occurred_at_ms`` None is now (plus its place in it)."""

    game_id: str
    event_type: str
    occurred_at_ms: str | None = None


BURST: list[Scripted] = [
    Scripted("game-alpha", "container_started"),
    Scripted("game-beta", "container_started"),
    Scripted("game-beta", "probe_failed"),
    Scripted("game-beta", "probe_failed"),  # same summary again: debounced, no snapshot
    Scripted("game-alpha", "container_exited"),  # running -> engine_unreachable
    Scripted("game-gamma", "container_oom"),  # CAS miss: generation holds the status
    Scripted("game-beta", "probe_failed", "soon"),  # malformed: a dead letter
    Scripted("game-delta", "probe_recovered"),  # engine_unreachable -> running
    Scripted("game-alpha", "probe_recovered"),  # alpha's recovery
    Scripted("game-omega", "probe_failed"),  # no such game: a dead letter
    Scripted("game-beta", "inspect_unhealthy"),
]


class Shows(StrEnum):
    """What one entry showed; every kind but a plain new summary is promised by the README."""

    NEW_SUMMARY = "new summary"
    REPEATED_SUMMARY = "repeated summary"
    STATUS_CHANGE = "status change"
    RECOVERY = "its recovery"
    CAS_MISS = "compare-and-swap miss"
    MALFORMED = "malformed entry"
    UNKNOWN_GAME = "game that does not exist"


PROMISED = [kind for kind in Shows if kind is not Shows.NEW_SUMMARY]
"""The kinds the burst must show: the demo says so when a run shows one of them no more."""


class Written(NamedTuple):
    """An entry as the stream holds it, with the id Redis gave it."""

    entry_id: str
    game_id: str
    event_type: str
    occurred_at_ms: str


class Outcome(NamedTuple):
    """What the run did with one entry, read back from the store and the lobby stream."""

    rejected: str | None
    """The dead letter's reason."""
    change: Mapping[str, object] | None
    """The history row it wrote (a new status or summary)."""
    snapshot: Mapping[str, object] | None
    """The snapshot it published on ``gm:lobby_events``."""


DEMO_SCHEMA = "demo"
"""``--postgres``: the schema the demo's own store lives in."""

TRIAL_SCHEMA = "healthfsm"
"""``--keep``: the empty schema left for the user's own trial (the README's name)."""

TRIAL_REDIS_DB = 1
"""``--keep``: the empty Redis database left for the trial (the demo's is 0)."""


def _seed_stream(client: redis.Redis) -> list[Written]:
    """Write the burst; return the entries as the stream holds them, with their ids."""
    now = wall_clock_ms()
    for offset, (game_id, event_type, occurred) in enumerate(BURST):
        at = str(now + offset) if occurred is None else occurred
        client.xadd(
            c.HEALTH_STREAM, {"game_id": game_id, "event_type": event_type, "occurred_at_ms": at}
        )
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(c.HEALTH_STREAM)  # type: ignore[assignment]
    return [
        Written(entry_id.decode(), *(f[name.encode()].decode() for name in Written._fields[1:]))
        for entry_id, f in entries
    ]


def _outcomes(
    db: Store, written: list[Written], snapshots: list[dict[str, object]]
) -> list[Outcome]:
    """Each entry's dead letter, history row and snapshot, matched by entry id."""
    dead = {
        str(row["entry_id"]): str(row["reason"])
        for row in dead_letters.list_recent(db.conn, limit=len(written))
    }
    changes = {
        str(row["entry_id"]): row
        for game_id in sorted({entry.game_id for entry in written})
        for row in history.for_game(db.conn, game_id)
    }
    published = {str(s["source_entry_id"]): s for s in snapshots}
    return [
        Outcome(dead.get(e.entry_id), changes.get(e.entry_id), published.get(e.entry_id))
        for e in written
    ]


def _status_kept(event_type: str, outcome: Outcome) -> tuple[Shows, str]:
    """An applied entry that changed no status: a CAS miss, a repeat or a new summary."""
    reaction = REACTIONS[EventType(event_type)]
    if reaction.cas is not None:
        if outcome.change is None:
            return Shows.CAS_MISS, f"{Shows.CAS_MISS}: nothing changed"
        return Shows.CAS_MISS, f"{Shows.CAS_MISS}: {outcome.change['to_status']} kept, summary only"
    if outcome.snapshot is None:
        return Shows.REPEATED_SUMMARY, f"{Shows.REPEATED_SUMMARY}: debounced, no snapshot"
    return Shows.NEW_SUMMARY, f"{Shows.NEW_SUMMARY} {reaction.summary.value}"


def shows(
    entry: Written, outcome: Outcome, earlier: set[tuple[str, str, str]]
) -> tuple[Shows, str]:
    """What ``entry`` showed, from its outcome; ``earlier`` holds the status changes before
    it in the burst as (game, from, to), so a change back is named a recovery."""
    if outcome.rejected is not None:
        unknown = outcome.rejected == c.REASON_UNKNOWN_GAME
        kind = Shows.UNKNOWN_GAME if unknown else Shows.MALFORMED
        return kind, f"{kind}: dead letter {outcome.rejected}"
    change = outcome.change
    if change is not None and change["from_status"] != change["to_status"]:
        before, after = str(change["from_status"]), str(change["to_status"])
        back = (entry.game_id, after, before) in earlier
        kind = Shows.RECOVERY if back else Shows.STATUS_CHANGE
        return kind, f"{kind}: {before} -> {after}"
    return _status_kept(entry.event_type, outcome)


def marks(written: list[Written], outcomes: list[Outcome]) -> list[tuple[Shows, str]]:
    """What each entry showed, in stream order."""
    earlier: set[tuple[str, str, str]] = set()
    found = []
    for entry, outcome in zip(written, outcomes, strict=True):
        found.append(shows(entry, outcome, earlier))
        change = outcome.change
        if change is not None and change["from_status"] != change["to_status"]:
            earlier.add((entry.game_id, str(change["from_status"]), str(change["to_status"])))
    return found


def _entries_table(
    console: Console, written: list[Written], found: list[tuple[Shows, str]]
) -> None:
    """The burst as written, each entry with what it showed; and a note if a kind the
    README promises is missing (the script or the rules changed under the demo)."""
    rows: list[dict[str, object]] = [
        {
            **entry._asdict(),
            "occurred_at_ms": int(at) if (at := entry.occurred_at_ms).isdigit() else at,
            "shows": text,
        }
        for entry, (_, text) in zip(written, found, strict=True)
    ]
    rows_table(
        rows,
        ["entry_id", "game_id", "event_type", "occurred_at_ms", "shows"],
        f"{c.HEALTH_STREAM}: the entries written, and what each one showed",
    )
    shown = {kind for kind, _ in found}
    missing = [kind.value for kind in PROMISED if kind not in shown]
    if missing:
        console.print(f"[bold red]note[/]: this run showed no {', '.join(missing)}")


def _refuse_a_real_store(path: Path) -> None:
    """The demo registers games and moves the offset to now: never in someone's store."""
    if not path.exists():
        return
    db = open_database(path, read_only=True)
    try:
        games = records.count(db.conn)
        labels = offsets.count(db.conn)
    finally:
        db.close()
    if games or labels:
        raise DemoRefused(
            f"{path} already holds {games} games and {labels} offsets; the demo registers"
            " its own games and moves the offset, so give it a new file (or none)"
        )


def _published(client: redis.Redis) -> list[dict[str, object]]:
    """The snapshots on the lobby stream, decoded as Game Lobby reads them."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = client.xrange(c.LOBBY_STREAM)  # type: ignore[assignment]
    return [decode_snapshot(fields).model_dump(mode="json") for _, fields in entries]


def _results(
    console: Console, db: Store, worker: Worker, snapshots: list[dict[str, object]]
) -> None:
    """The worker's counts, the records, the snapshots and the dead letters it left."""
    t = worker.totals
    console.print(
        f"consumed {t.entries} entries: {t.applied} applied, {t.rejected} rejected,"
        f" {t.snapshots_published} snapshots published"
    )
    records_table([records.as_dict(r) for r in records.iter_all(db.conn)], "runtime records")
    rows_table(
        snapshots,
        ["source_entry_id", "game_id", "runtime_status", "engine_health_summary", "current_turn"],
        f"{c.LOBBY_STREAM} (runtime_snapshot_update)",
    )
    rows_table(
        dead_letters.list_recent(db.conn, limit=20)[::-1],
        ["entry_id", "reason", "detail"],
        "dead letters",
    )


def _play(console: Console, location: str, redis_url: str) -> None:
    """Register, write the burst, drain it with the real worker, print what happened."""
    db = open_database(location, create=True)
    client = redis.Redis.from_url(redis_url)
    try:
        for game_id, status, turn in GAMES:
            add_game(db, game_id, status, turn, wall_clock_ms())
        console.print(
            f"[bold]healthfsm demo[/]: private Redis at {redis_url}, database {db.location}"
        )
        records_table([records.as_dict(r) for r in records.iter_all(db.conn)], "registered games")
        written = _seed_stream(client)
        console.print(f"wrote {len(written)} entries to {c.HEALTH_STREAM}")
        worker = Worker(ConsumerSettings(redis_url=redis_url, db_path=location, drain=True), db)
        worker.run()
        snapshots = _published(client)
        _entries_table(console, written, marks(written, _outcomes(db, written, snapshots)))
        _results(console, db, worker, snapshots)
    finally:
        client.close()
        db.close()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, ``kill`` and a closed terminal: each ends the demo through its cleanup."""


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Make ``STOP_SIGNALS`` raise KeyboardInterrupt (the default action of SIGTERM and
    SIGHUP would leave a running PostgreSQL and its folder); once one came, the others are
    ignored until the block is left, so a second Ctrl-C cannot cut the cleanup short. A
    signal ignored from the start (a background job's SIGINT) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: h for s in STOP_SIGNALS if (h := signal.getsignal(s)) not in (None, signal.SIG_IGN)}

    def interrupt(signum: int, frame: FrameType | None) -> None:
        for other in saved:
            signal.signal(other, signal.SIG_IGN)
        raise KeyboardInterrupt

    for signum in saved:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _postgres(console: Console) -> Iterator[embedded_pg.EmbeddedPostgres]:
    """A private PostgreSQL with an empty schema for the demo; stopped and removed after."""
    started = time.monotonic()
    with embedded_pg.running() as server:
        create_schema(server.url(), DEMO_SCHEMA)
        console.print(
            f"started PostgreSQL from the pgserver wheel in {time.monotonic() - started:.1f} s"
            f" (folder {server.root}, removed at the end)"
        )
        yield server


def _hold(console: Console, pg: embedded_pg.EmbeddedPostgres, redis_port: int) -> None:
    """``--keep``: leave both servers running, with an empty schema and Redis database for
    the user's own trial, until Ctrl-C (or SIGTERM/SIGHUP); then the cleanup runs. The
    signal may come as soon as the URLs are out: the wait is entered before they are."""
    create_schema(pg.url(), TRIAL_SCHEMA)
    redis_url = f"redis://{embedded.LOOPBACK}:{redis_port}/{TRIAL_REDIS_DB}"
    try:
        console.print(
            f"PostgreSQL and Redis keep running for your own trial: an empty schema"
            f" {TRIAL_SCHEMA} and an empty Redis database {TRIAL_REDIS_DB} (the demo's are"
            f" schema {DEMO_SCHEMA} and database 0). In another shell:"
        )
        print(f"  export HEALTHFSM_DB='{pg.url(TRIAL_SCHEMA)}'")
        print(f"  export HEALTHFSM_REDIS_URL='{redis_url}'")
        print("Press Ctrl-C here to stop both and remove their files.", flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        console.print("stopping PostgreSQL and Redis, removing their files")


def run_demo(db_path: Path | None = None, *, postgres: bool = False, keep: bool = False) -> None:
    """Run the scenario and print what happened: on a SQLite file (``db_path`` or a temp
    one), or with ``postgres`` on a private server, kept running after it with ``keep``.
    Every server and folder it starts is gone when it returns or raises."""
    if db_path is not None:
        _refuse_a_real_store(db_path)
    if postgres:
        embedded_pg.bin_dir()  # a missing wheel is one line, before anything starts
    console = render_console()
    logs.configure("WARNING")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_signals_interrupt())
        server = stack.enter_context(embedded.running())
        if postgres:
            pg = stack.enter_context(_postgres(console))
            location = pg.url(DEMO_SCHEMA)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="healthfsm-demo-"))
            location = str(db_path or Path(tmp) / "demo.db")
        _play(console, location, server.url)
        if postgres and keep:
            _hold(console, pg, server.port)
