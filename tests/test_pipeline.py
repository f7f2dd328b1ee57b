"""The pipelined parts of the loop: the read-ahead and the relay's send/confirm, on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from consumer.contract.codec import encode_snapshot
from consumer.devtools import embedded
from consumer.runtime.read_ahead import ReadAhead
from consumer.runtime.redis_client import connect
from consumer.runtime.relay import OutboxRelay
from statemachine import Status
from store import outbox
from store.backend import Store
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, published, xadd_event
from tests.streams import entries

STREAM = "runtime:health_events"
LOBBY = "gm:lobby_events"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = connect(redis_url, socket_timeout_s=5.1)
    yield c
    c.close()


def _ids(entries: list[tuple[bytes, dict[bytes, bytes]]] | None) -> list[str]:
    return [entry_id.decode() for entry_id, _ in entries or []]


def _continuing(taken: tuple[list[tuple[bytes, dict[bytes, bytes]]], bool] | None) -> list[str]:
    """The ids read ahead, which must continue the stream from the offset without a gap."""
    assert taken is not None
    entries, continues = taken
    assert continues
    return _ids(entries)


def test_read_ahead_returns_what_a_plain_read_would(
    client: redis.Redis, rclient: redis.Redis
) -> None:
    ids = [xadd_event(rclient, "g", "probe_failed") for _ in range(5)]
    ahead = ReadAhead(client)
    ahead.send(STREAM, ids[1], 2)
    assert ahead.in_flight
    assert _continuing(ahead.take(ids[1])) == ids[2:4]
    assert not ahead.in_flight
    assert ahead.take(ids[3]) is None  # nothing in flight: the caller reads itself
    ahead.discard()


def test_read_ahead_from_elsewhere_is_dropped_never_used(
    client: redis.Redis, rclient: redis.Redis
) -> None:
    ids = [xadd_event(rclient, "g", "probe_failed") for _ in range(3)]
    ahead = ReadAhead(client)
    ahead.send(STREAM, ids[0], 10)
    assert ahead.take(ids[1]) is None  # the offset is not where the read started
    assert not ahead.in_flight
    ahead.send(STREAM, ids[1], 10)  # the connection is usable again
    assert _continuing(ahead.take(ids[1])) == ids[2:]
    ahead.discard()


def test_read_ahead_says_when_the_offset_entry_was_trimmed(
    client: redis.Redis, rclient: redis.Redis
) -> None:
    ids = [xadd_event(rclient, "g", "probe_failed") for _ in range(4)]
    rclient.xtrim(STREAM, minid=ids[2], approximate=False)  # the offset ids[1] is gone
    ahead = ReadAhead(client)
    ahead.send(STREAM, ids[1], 10)
    expected = [(entry_id.encode(), _fields(rclient, entry_id)) for entry_id in ids[2:]]
    assert ahead.take(ids[1]) == (expected, False)
    ahead.discard()


def _fields(client: redis.Redis, entry_id: str) -> dict[bytes, bytes]:
    [(_, fields)] = entries(client, STREAM, min=entry_id, max=entry_id)
    return dict(fields)


def test_read_ahead_on_a_vanished_server_raises_and_keeps_nothing() -> None:
    server = embedded.start()
    own = connect(server.url, socket_timeout_s=5.1)
    ahead = ReadAhead(own)
    ahead.send(STREAM, "0-0", 10)
    assert ahead.take("0-0") == ([], True)  # connected, nothing there yet
    server.stop()
    with pytest.raises(redis.ConnectionError):  # at the send or, buffered, at the reply
        ahead.send(STREAM, "0-0", 10)
        ahead.take("0-0")
    assert not ahead.in_flight
    own.close()


def _rows(db: Store, n: int, first: int = 0) -> list[tuple[int, outbox.OutboxRow]]:
    rows = [
        outbox.OutboxRow(f"{i + 1}-0", f"g{i}", "running", "healthy", i, FIXED_NOW_MS)
        for i in range(first, first + n)
    ]
    with db.write() as conn:
        return outbox.enqueue(conn, rows)


def test_relay_sends_now_and_confirms_later_in_order(
    db: Store, client: redis.Redis, rclient: redis.Redis
) -> None:
    relay = OutboxRelay(db, client, LOBBY, chunk=3)
    assert relay.publish() == 0  # start: the (empty) table first
    committed = _rows(db, 7)
    relay.committed(committed)
    assert relay.send() == 0
    assert relay.in_flight == 7 and outbox.pending(db.conn) == 7
    assert relay.confirm() == 7
    assert relay.in_flight == 0 and outbox.pending(db.conn) == 0
    got = [dict(fields) for _, fields in entries(rclient, LOBBY)]
    assert got == [encode_snapshot(row) for _, row in committed]
    relay.close()


def test_a_chunk_confirmed_after_taking_partitions_leaves_the_last_holder_s_rows_to_go_out(
    db: Store, client: redis.Redis, rclient: redis.Redis
) -> None:
    """A worker holding game g1's partition takes g0's while a chunk of its own is still in
    flight (pipelined during a backlog). The last holder of g0 left a row below that chunk;
    the rescan must publish it, though confirming the older chunk comes first. (A chaos run
    in CI lost such snapshots: the confirmation moved the table's read position past them,
    and when they went out later, after newer ones, Redis skipped them as appended.)"""
    mine = {"g1"}
    relay = OutboxRelay(db, client, LOBBY, chunk=10)
    relay.owns = lambda game_id: game_id in mine
    assert relay.publish() == 0  # start: the (empty) table first
    left, own = _rows(db, 2)  # seq 1: g0, the last holder's; seq 2: g1, this worker's
    relay.committed([own])
    assert relay.send() == 0 and relay.in_flight == 1  # sent, its reply not read yet
    mine.add("g0")  # the partition of g0 taken
    relay.rescan()
    assert relay.publish() == 2  # the chunk in flight, then the last holder's row
    assert sorted(f[b"game_id"] for _, f in entries(rclient, LOBBY)) == [b"g0", b"g1"]
    assert outbox.pending(db.conn) == 0 and left[0] < own[0]
    relay.close()


def test_relay_that_loses_redis_mid_flight_republishes_from_the_table(
    db: Store,
) -> None:
    server = embedded.start()
    try:
        own = connect(server.url, socket_timeout_s=5.1)
        relay = OutboxRelay(db, own, LOBBY, chunk=2)
        _rows(db, 1)
        assert relay.publish() == 1  # connected, and the table is caught up
        server.stop()
        relay.committed(_rows(db, 3, first=1))
        with pytest.raises(redis.ConnectionError):  # at the send or, buffered, at the reply
            relay.send()
            relay.confirm()
        assert relay.in_flight == 0 and outbox.pending(db.conn) == 3  # nothing lost
        server.restart()
        relay.committed(_rows(db, 1, first=4))  # ignored: the table is the truth now
        assert relay.send() == 4  # the backlog goes out synchronously, in order
        after = redis.Redis.from_url(server.url)  # a new, empty server
        assert [f[b"game_id"] for _, f in entries(after, LOBBY)] == [b"g1", b"g2", b"g3", b"g4"]
        assert outbox.pending(db.conn) == 0
        after.close()
        relay.close()
        own.close()
    finally:
        server.stop()


def test_a_backlog_drains_pipelined_with_the_same_result(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING), ("h", Status.RUNNING))
    kinds = ["probe_failed", "probe_recovered", "container_exited", "container_started"]
    ids = [xadd_event(rclient, game, kind) for kind in kinds for game in ("g", "h")]
    worker = make_worker(batch_size=3)
    sends: list[bool] = []
    original = worker.read_ahead.send

    def counted(stream: str, after_id: str, count: int) -> None:
        sends.append(True)
        original(stream, after_id, count)

    worker.read_ahead.send = counted  # type: ignore[method-assign]
    worker.run()
    assert len(sends) == 2  # batches of 3, 3, 2: read ahead after each full one
    assert [s["source_entry_id"] for s in published(rclient)] == ids
    assert outbox.pending(db.conn) == 0


def test_connections_killed_mid_backlog_lose_nothing(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    """CLIENT KILL drops the read-ahead, the relay and the main connection mid-drain."""
    import threading

    games = [f"g{i}" for i in range(40)]
    add_games(db, *[(g, Status.RUNNING) for g in games])
    pipe = rclient.pipeline(transaction=False)
    for n in range(4000):  # every event flips its game's summary: every one is a snapshot
        kind = "probe_failed" if (n // len(games)) % 2 == 0 else "probe_recovered"
        fields = {"game_id": games[n % len(games)], "event_type": kind, "occurred_at_ms": "1"}
        pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    killed = 0

    def kill_after_the_tenth(_: object, __: float) -> None:
        """Right after the tenth batch commits, in the worker's own thread: mid-drain
        however the threads are scheduled."""
        nonlocal killed
        if worker.totals.batches == 10:
            killed = rclient.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # type: ignore[no-untyped-call]

    worker = make_worker(
        batch_size=50,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        observers=[kill_after_the_tenth],
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert killed >= 1 and worker.totals.reconnects >= 1
    assert worker.totals.entries == len(ids)  # each entry committed exactly once
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert list(dict.fromkeys(sources)) == ids  # every snapshot, first sightings in order
    assert outbox.pending(db.conn) == 0
    last = "probe_recovered" if (3999 // len(games)) % 2 else "probe_failed"
    summaries = {row[0] for row in db.conn.execute("SELECT engine_health FROM runtime_records")}
    assert summaries == {"healthy" if last == "probe_recovered" else "probe_failed"}


def test_a_writer_lock_mid_backlog_delays_but_loses_and_repeats_nothing(
    db_path: object, db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    """Another writer takes the lock while snapshots are in flight: deletes and batches wait."""
    import sqlite3
    import threading

    from store import open_database

    games = [f"g{i}" for i in range(20)]
    add_games(db, *[(g, Status.RUNNING) for g in games])
    pipe = rclient.pipeline(transaction=False)
    for n in range(2000):
        kind = "probe_failed" if (n // len(games)) % 2 == 0 else "probe_recovered"
        fields = {"game_id": games[n % len(games)], "event_type": kind, "occurred_at_ms": "1"}
        pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
    ids = [entry_id.decode() for entry_id in pipe.execute()]
    impatient = open_database(str(db_path), busy_timeout_s=0.02)
    blocker = sqlite3.connect(str(db_path), isolation_level=None, check_same_thread=False)
    released = threading.Timer(0.3, lambda: blocker.execute("ROLLBACK"))

    def lock_after_the_fifth(_: object, __: float) -> None:
        """Right after the fifth batch commits, in the worker's own thread: the lock is
        held before its next batch however the threads are scheduled."""
        if worker.totals.batches == 5:
            blocker.execute("BEGIN IMMEDIATE")  # an admin command holding the write lock
            released.start()

    worker = make_worker(
        impatient,
        batch_size=40,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        observers=[lock_after_the_fifth],
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(timeout=60)
    released.join()
    assert not thread.is_alive()
    assert worker.totals.busy_retries >= 1
    assert worker.totals.entries == len(ids)
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert sources == ids  # nothing lost, nothing published twice
    assert outbox.pending(db.conn) == 0
    blocker.close()
    impatient.close()
