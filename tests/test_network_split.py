"""A network partition between the active worker and Redis or its store: held bytes arrive late.

Two real ``healthfsm consume`` processes share a store. The active one, A, reaches Redis
(or, on PostgreSQL, the store) through a TCP proxy (``tests.tcp_proxy``); the standby, B,
reaches both directly. The proxy starts blackholing A's link at the moment A writes a
publish to the lobby stream (or the COMMIT of a batch), and keeps every byte, as TCP
retransmission keeps it. A's lease runs out, B takes over, publishes what A left in the
outbox and then newer snapshots of every game; only then does the link heal: A's held
bytes reach the server late (or its connections are reset). Lobby must never see a
snapshot of a game appended after a newer one (a stale state), the records must be what
one worker makes of the whole stream (``tests.model``), and every snapshot must be
delivered.

Before the publish fence (commit 45e4af6) the Redis case fails: A's held XADDs of 24
snapshots land after B's newer ones. The store cases passed then too: the store's lease
fence and PostgreSQL ending A's session, idle in its transaction, keep A's late COMMIT out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import pytest
import redis

from store import Store, offsets, open_database, outbox, records
from store.records import insert_new
from tests import pg
from tests.model import Model, ModelRecord
from tests.processes import Consume, wait_for
from tests.streams import Entry, entries, newest_id
from tests.tcp_proxy import TcpProxy, proxy_to

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"
LOBBY = "gm:lobby_events"
LABEL = "health_events"
GAMES = 200
GAME_IDS = [f"game-{i}" for i in range(GAMES)]
"""Named so that a store transaction that writes records shows on the wire (``game-``)."""
EVENTS = 6000
PER_WRITE = 25
PAUSE_S = 0.05
"""25 entries every 50 ms: about 500 a second while the producer runs (12 s unhurried)."""
TTL_S = "2"
CYCLE = [
    "container_started",
    "probe_failed",
    "container_exited",
    "probe_recovered",
    "inspect_unhealthy",
    "container_oom",
    "probe_recovered",
    "container_disappeared",
]
"""Each game's events in turn: every one changes the summary (so each is a snapshot), and
the statuses move between running and engine_unreachable."""
PUBLISH_MARKER = LOBBY.encode()
"""In every publish command A writes (an XADD, or the script call that fences it)."""
MIDDLE_GAME_MARKER = b"$7\r\ngame-10\r\n"
"""A game id as a publish carries it (a RESP bulk string). The producer writes 25 entries
at a time and A's blocking read wakes at the first, so a publish with this game's snapshot
carries most of a write's: the held publish is a chunk of snapshots, not one."""
COMMIT_MARKER = b"COMMIT"
"""The end of each of A's store transactions (psycopg sends it as a plain query; other
statements go as prepared ones after a few runs, without their text)."""
BATCH_MARKER = b"game-"
"""In the parameters of a batch transaction's writes, not in a lease renewal or an outbox
delete: ``COMMIT`` after it is a batch's commit."""
WORKER_OPTIONS = ["--lease-ttl", TTL_S, "--block-ms", "100"]

StreamId = tuple[int, int]


def stream_id(entry_id: str) -> StreamId:
    """An entry id as Redis orders it: (ms, seq)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


class Producer(threading.Thread):
    """Writes ``EVENTS`` health events at a steady pace, then stops by itself."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.written = 0

    def run(self) -> None:
        while self.written < EVENTS and not self.stop.is_set():
            pipe = self.client.pipeline(transaction=False)
            for n in range(self.written, min(self.written + PER_WRITE, EVENTS)):
                kind = CYCLE[(n // GAMES) % len(CYCLE)]
                fields = {"game_id": GAME_IDS[n % GAMES], "event_type": kind, "occurred_at_ms": "1"}
                pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
            pipe.execute()
            self.written = min(self.written + PER_WRITE, EVENTS)
            self.stop.wait(PAUSE_S)


@pytest.fixture
def started() -> Iterator[list[Consume]]:
    """Every worker the test starts, stopped (SIGTERM, then SIGKILL) whatever the outcome."""
    workers: list[Consume] = []
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[TcpProxy]:
    """A proxy to the test's Redis, closed whatever the outcome."""
    parts = urlsplit(redis_url)
    assert parts.hostname is not None and parts.port is not None
    with proxy_to(parts.hostname, parts.port) as proxy:
        yield proxy


@pytest.fixture
def producer(rclient: redis.Redis) -> Iterator[Producer]:
    """The event producer (not started), stopped and joined whatever the outcome."""
    thread = Producer(rclient)
    yield thread
    thread.stop.set()
    if thread.is_alive():
        thread.join(30)


class LobbyWatch:
    """Reads the lobby stream incrementally: each game's newest source entry id so far."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.after = "-"
        self.newest: dict[str, StreamId] = {}

    def all_newer_than(self, entry_id: str) -> bool:
        """Whether every game has a snapshot on the lobby stream from an entry past
        ``entry_id``."""
        for raw_id, fields in entries(self.client, LOBBY, min=self.after):
            self.after = "(" + raw_id.decode()
            source = stream_id(fields[b"source_entry_id"].decode())
            game = fields[b"game_id"].decode()
            self.newest[game] = max(self.newest.get(game, (0, 0)), source)
        bar = stream_id(entry_id)
        return len(self.newest) == GAMES and all(at > bar for at in self.newest.values())


@dataclass
class Split:
    """Where the cut is and how it heals, for ``split_and_heal``."""

    proxy: TcpProxy
    marker: bytes
    after: bytes | None
    """The hold starts as A writes a chunk with these bytes on the proxied link."""
    heal: Literal["deliver", "reset"]
    """Deliver every held byte late, or end A's connections with a reset."""
    learns_while_cut: bool
    """Whether A learns of the takeover before the heal (its Redis replies time out; a
    store query has no client timeout, so A waits for the heal)."""


def split_and_heal(
    db: Store,
    rclient: redis.Redis,
    producer: Producer,
    a: Consume,
    start_b: Callable[[], Consume],
    split: Split,
) -> str:
    """Cut A off as it writes ``split.marker``, let B take over and publish newer snapshots
    of every game, heal, let B apply everything; return a line saying what happened."""
    with db.write() as conn:
        insert_new(conn, GAME_IDS, "running", 0)
    wait_for(lambda: "holding the lease" in a.stderr(), 60, "A is active")
    b = start_b()
    wait_for(lambda: "standing by" in b.stderr(), 60, "B stands by")

    producer.start()
    wait_for(lambda: rclient.xlen(LOBBY) > 0, 60, "A publishes")
    split.proxy.hold_at(split.marker, split.after)
    wait_for(split.proxy.holding.is_set, 60, f"the link held as A writes {split.marker!r}")
    held_at = time.monotonic()
    a_committed = offsets.load(db.conn, LABEL)  # A commits nothing more while cut off
    assert a_committed is not None

    wait_for(lambda: "took over the lease" in b.stderr(), 60, "B takes over A's lease")
    lobby = LobbyWatch(rclient)
    wait_for(
        lambda: lobby.all_newer_than(a_committed), 60, "B publishes newer snapshots of every game"
    )
    if split.learns_while_cut:
        wait_for(lambda: "standing by" in a.stderr(), 60, "A learns it lost the lease")
    if split.heal == "reset":
        split.proxy.reset()
        held = split.proxy.held_bytes
        split.proxy.release()  # pass again: A reconnects
        healed = f"{held} bytes held and dropped by a reset"
    else:
        delivered = split.proxy.release()
        assert delivered > 0, "A's held bytes reach the server at the heal"
        healed = f"{delivered} bytes delivered late"
    hold_s = time.monotonic() - held_at
    wait_for(lambda: "standing by" in a.stderr(), 60, "A stands by after the heal")

    producer.join(120)
    assert producer.written == EVENTS
    last = newest_id(rclient, STREAM)
    wait_for(
        lambda: offsets.load(db.conn, LABEL) == last and outbox.pending(db.conn) == 0,
        120,
        "B applies every entry and publishes every snapshot",
    )
    codes = [a.stop(), b.stop()]
    logs = {"A": a.stderr(), "B": b.stderr()}
    assert codes == [0, 0], logs
    assert not [name for name, log in logs.items() if "Traceback" in log], logs
    return f"held {hold_s:.1f}s, {healed}"


def assert_as_one_worker_without_stale_snapshots(
    db: Store, rclient: redis.Redis, what: str
) -> None:
    """No stale re-publication; the records and the snapshots those of the model."""
    model = one_worker_model(rclient)
    assert not model.dead
    sent = entries(rclient, LOBBY)
    stale = stale_republications(sent)
    print(
        f"network split: {what}; {len(sent)} snapshots on the lobby stream for"
        f" {len(model.snapshots)} due; {len(stale)} stale"
    )
    assert not stale, (
        f"{len(stale)} stale re-publication(s): a snapshot of an older entry appended after"
        " a newer one of the same game:\n" + "\n".join(stale)
    )
    assert_records_are_the_models(db, model)
    assert_every_snapshot_delivered(rclient, model)


def test_a_worker_cut_off_from_redis_never_publishes_after_its_successor(
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    redis_proxy: TcpProxy,
    producer: Producer,
    started: list[Consume],
    tmp_path: Path,
) -> None:
    """The issue's partition: A's publish is held past its lease and delivered after B's
    newer snapshots; A's reads time out meanwhile and it stands by."""
    common = ["--db", db_location, *WORKER_OPTIONS]
    proxied = f"redis://127.0.0.1:{redis_proxy.port}/0"
    started.append(Consume(tmp_path / "a.log", "--redis-url", proxied, *common))

    def start_b() -> Consume:
        started.append(Consume(tmp_path / "b.log", "--redis-url", redis_url, *common))
        return started[-1]

    split = Split(redis_proxy, PUBLISH_MARKER, MIDDLE_GAME_MARKER, "deliver", learns_while_cut=True)
    what = split_and_heal(db, rclient, producer, started[0], start_b, split)
    assert_as_one_worker_without_stale_snapshots(db, rclient, what)


@pytest.fixture
def pg_link() -> Iterator[tuple[str, str, TcpProxy]]:
    """A new schema on the test PostgreSQL server: its URL over TCP, the same URL through
    a proxy, and the proxy (closed whatever the outcome)."""
    direct = pg.new_schema_url(tcp=True)
    port = pg.server().port
    with proxy_to("127.0.0.1", port) as proxy:
        proxied = direct.replace(f"@127.0.0.1:{port}/", f"@127.0.0.1:{proxy.port}/")
        assert proxied != direct
        yield direct, proxied, proxy


@pytest.mark.parametrize("heal", ["deliver", "reset"])
def test_a_worker_cut_off_from_its_store_never_publishes_after_its_successor(
    heal: Literal["deliver", "reset"],
    pg_link: tuple[str, str, TcpProxy],
    redis_url: str,
    rclient: redis.Redis,
    producer: Producer,
    started: list[Consume],
    tmp_path: Path,
) -> None:
    """PostgreSQL only (a store reached over the network): A's link to the store is held
    as it commits a batch; the server ends A's session, idle in its transaction, B takes
    over; at the heal A's COMMIT arrives late (or its connections are reset)."""
    direct, proxied, proxy = pg_link
    db = open_database(direct, create=True)
    try:
        common = ["--redis-url", redis_url, *WORKER_OPTIONS]
        started.append(Consume(tmp_path / "a.log", "--db", proxied, *common))

        def start_b() -> Consume:
            started.append(Consume(tmp_path / "b.log", "--db", direct, *common))
            return started[-1]

        split = Split(proxy, COMMIT_MARKER, BATCH_MARKER, heal, learns_while_cut=False)
        what = split_and_heal(db, rclient, producer, started[0], start_b, split)
        assert_as_one_worker_without_stale_snapshots(db, rclient, what)
    finally:
        db.close()


def one_worker_model(client: redis.Redis) -> Model:
    """What the contract says one worker makes of the whole input stream."""
    model = Model(records={game: ModelRecord("running") for game in GAME_IDS})
    for raw_id, fields in entries(client, STREAM):
        model.health(raw_id.decode(), fields[b"game_id"].decode(), fields[b"event_type"].decode())
    return model


def stale_republications(sent: list[Entry]) -> list[str]:
    """Where a game's snapshots, in stream order, go back to an older source entry: each
    as the game, the older source, where it landed and the newer one it came after. A copy
    directly after itself is the documented duplicate, not one of these."""
    newest: dict[str, str] = {}
    stale: list[str] = []
    for raw_id, fields in sent:
        game = fields[b"game_id"].decode()
        source = fields[b"source_entry_id"].decode()
        before = newest.get(game)
        if before is not None and stream_id(source) < stream_id(before):
            stale.append(f"{game}: {source} (appended as {raw_id.decode()}) after {before}")
        else:
            newest[game] = source
    return stale


def assert_records_are_the_models(db: Store, model: Model) -> None:
    got = {
        r.game_id: (r.state.value, r.engine_health, r.current_turn, r.last_emitted_summary)
        for r in records.iter_all(db.conn)
    }
    assert got == {
        game: (r.status, r.engine_health, r.turn, r.last_emitted)
        for game, r in model.records.items()
    }


def assert_every_snapshot_delivered(client: redis.Redis, model: Model) -> None:
    """Each game's snapshots, each counted at its first copy, are the model's, in order."""
    keys = ("game_id", "runtime_status", "engine_health_summary", "current_turn")
    first: dict[str, dict[str, str]] = {}
    order: dict[str, list[str]] = {}
    for _, fields in entries(client, LOBBY):
        text = {k.decode(): v.decode() for k, v in fields.items()}
        source = text["source_entry_id"]
        if source not in first:
            first[source] = text
            order.setdefault(text["game_id"], []).append(source)
    expected: dict[str, list[str]] = {}
    for snapshot in model.snapshots:
        expected.setdefault(snapshot["game_id"], []).append(snapshot["source_entry_id"])
        got = first.get(snapshot["source_entry_id"])
        assert got is not None, f"never published: {snapshot}"
        assert {k: got[k] for k in keys} == {k: snapshot[k] for k in keys}
    assert order == expected, "each game's snapshots, deduplicated, in the model's order"
