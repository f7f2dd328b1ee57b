"""One active worker per store and label: the lease, standby, handover, takeover, fencing.

Real ``healthfsm consume`` processes on a real Redis and one store (a SQLite file, or one
PostgreSQL schema shared as two machines would share it), signalled the way
deploys and machines do: SIGTERM (handover), SIGKILL (takeover), SIGSTOP past the TTL and
SIGCONT (fencing: the paused worker writes and publishes nothing more).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import Store, holders, offsets, open_database, outbox, partitions
from store.errors import LeaseHeld, LeaseLost
from store.records import insert_new
from tests.conftest import FIXED_NOW_MS, add_games, published, seed_flips, xadd_event
from tests.ownership import free, lease_of, occupy
from tests.processes import Consume, is_stopped, run_cli, wait_for
from tests.streams import entries, newest_id

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"
LABEL = "health_events"


def test_lease_row_is_taken_renewed_fenced_and_released(db: Store) -> None:
    with db.write() as conn:
        partitions.ensure(conn, LABEL)
    [free_row] = partitions.read_leases(db.conn, LABEL).values()
    assert free_row.holder == "" and free_row.epoch == 0 and not free_row.binds("h:2:b", "n", 0)
    with db.write() as conn:
        a = partitions.try_take(conn, free_row, "h:1:a", "node", 1000, 500)
    assert a is not None and a.epoch == 1
    assert a.binds("h:2:b", "node", 1200)  # live: refused to others
    with db.write() as conn:
        assert partitions.try_take(conn, free_row, "h:2:b", "node", 1200, 500) is None  # CAS
    with db.write() as conn:
        assert partitions.renew(conn, LABEL, "h:1:a", {0: 1}, 1400, 500)
    renewed = lease_of(db, LABEL)
    assert renewed is not None and renewed.expires_at_ms == 1900
    assert not renewed.binds("h:2:b", "node", 1901)  # expired: free to take
    with db.write() as conn:
        b = partitions.try_take(conn, renewed, "h:2:b", "node", 1901, 500)
    assert b is not None and b.epoch == 2
    with db.write() as conn:
        assert not partitions.renew(conn, LABEL, "h:1:a", {0: 1}, 1950, 500)  # the fence
    with db.write() as conn:
        partitions.release(conn, LABEL, "h:2:b", {0: 2}, 1960)
    released = lease_of(db, LABEL)
    assert released is not None and not released.live(1950) and released.epoch == 2
    assert released.expires_at_ms == 0 and released.released_at_ms == 1960
    view = db.conn.execute("SELECT holder, epoch, expires_at_ms FROM leases").fetchall()
    assert [tuple(row) for row in view] == [("h:2:b", 2, 0)]  # as earlier releases showed it


def test_a_dead_holder_on_this_node_is_not_waited_for(db: Store) -> None:
    node = holders.this_node()
    dead_pid = 2**22 + 12345  # above any pid_max here: no such process
    host = __import__("socket").gethostname()
    dead = f"{host}:{dead_pid}:x"
    assert holders.dead_here(dead, node, node)
    assert not holders.dead_here(dead, "other-host/boot/1", node)
    assert not holders.dead_here(f"{host}:1:x", node, node)  # pid 1 runs
    held = partitions.PartitionLease(LABEL, 0, dead, node, 3, 0, 10**15)
    assert not held.binds("h:2:b", node, 0) and held.binds("h:2:b", "another/node", 0)


def _seed_games(db_location: str, games: int) -> None:
    db = open_database(db_location, create=True)
    with db.write() as conn:
        insert_new(conn, (f"g{i}" for i in range(games)), "running", 0)
    db.close()


def _consume_args(redis_url: str, db_location: str, *extra: str) -> list[str]:
    return ["--redis-url", redis_url, "--db", db_location, "--block-ms", "100", *extra]


def test_two_workers_on_one_store_apply_and_publish_everything_once(
    redis_url: str, rclient: redis.Redis, db_location: str, tmp_path: Path
) -> None:
    """Case 1 of the issue: a deploy that starts the new worker before stopping the old."""
    _seed_games(db_location, 200)
    pipe = rclient.pipeline(transaction=False)
    for i in range(20_000):
        game = f"g{i % 200}" if i % 100 else "ghost"  # 1% dead letters
        kind = ("container_started", "probe_failed", "inspect_unhealthy")[i % 3]
        pipe.xadd(STREAM, {"game_id": game, "event_type": kind, "occurred_at_ms": "1"})
    pipe.execute()
    last = newest_id(rclient, STREAM)
    args = _consume_args(redis_url, db_location, "--batch-size", "500")
    workers = [Consume(tmp_path / f"w{n}.log", *args) for n in range(2)]
    db = open_database(db_location)
    try:
        wait_for(lambda: offsets.load(db.conn, LABEL) == last, what="drained")
        wait_for(lambda: outbox.pending(db.conn) == 0, what="published")
        logs = [w.stderr() for w in workers]
        assert sum("standing by" in log for log in logs) == 1, logs
        assert [w.stop() for w in workers] == [0, 0]
        assert offsets.entries_read(db.conn, LABEL) == 20_000
        dead = db.conn.execute("SELECT count(*), count(DISTINCT entry_id) FROM dead_letters")
        assert dead.fetchone() == (200, 200)
    finally:
        db.close()
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert len(sources) == len(set(sources)) > 0  # nothing published twice


def test_sigterm_hands_over_at_once_and_sigkill_within_the_ttl(
    redis_url: str, rclient: redis.Redis, db_location: str, tmp_path: Path
) -> None:
    _seed_games(db_location, 1)
    args = _consume_args(redis_url, db_location, "--lease-ttl", "5")
    db = open_database(db_location)
    first = Consume(tmp_path / "first.log", *args)
    wait_for(lambda: "holding the lease" in first.stderr(), what="first is active")
    second = Consume(tmp_path / "second.log", *args)
    third = None
    try:
        wait_for(lambda: "standing by" in second.stderr(), what="second stands by")
        assert str(first.pid) in second.stderr()  # it names the holder
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
        stopped = time.monotonic()
        wait_for(lambda: "took over the lease" in second.stderr(), what="handover")
        assert time.monotonic() - stopped < 2.0  # released: no TTL to wait out
        entry = xadd_event(rclient, "g0", "probe_failed")
        wait_for(lambda: offsets.load(db.conn, LABEL) == entry, what="second applies")
        third = Consume(tmp_path / "third.log", *args)
        wait_for(lambda: "standing by" in third.stderr(), what="third stands by")
        second.signal(signal.SIGKILL)
        second.wait()
        killed = time.monotonic()
        entry = xadd_event(rclient, "g0", "container_exited")
        wait_for(lambda: offsets.load(db.conn, LABEL) == entry, timeout_s=10, what="takeover")
        assert time.monotonic() - killed < 5.0  # within the TTL
        assert "took over the lease" in third.stderr()
        current = lease_of(db, LABEL)
        assert current is not None and current.epoch == 3 and str(third.pid) in current.holder
    finally:
        for worker in (first, second, third):
            if worker is not None:
                worker.stop()
        db.close()
    assert [s["source_entry_id"] for s in published(rclient)][-1] == entry


def _lobby_history_read(rclient: redis.Redis, db: Store) -> tuple[int, int, int]:
    history = db.conn.execute("SELECT count(*) FROM runtime_history").fetchone()[0]
    return rclient.xlen("gm:lobby_events"), history, offsets.entries_read(db.conn, LABEL) or 0


def test_a_worker_paused_past_the_ttl_writes_and_publishes_nothing_more(
    redis_url: str, rclient: redis.Redis, db_location: str, tmp_path: Path
) -> None:
    """Paused right after committing a batch, before publishing it (the worst moment): a
    standby takes over after the TTL; resumed, the paused worker is fenced off."""
    _seed_games(db_location, 100)
    last = seed_flips(rclient, 100, 5000)
    args = _consume_args(redis_url, db_location, "--lease-ttl", "1", "--batch-size", "50")
    db = open_database(db_location)
    paused = Consume(
        tmp_path / "paused.log",
        *args,
        env={"HEALTHFSM_INJECT_FAULT": "after_commit:3:stop", "HEALTHFSM_TEST_HOOKS": "1"},
    )
    wait_for(lambda: is_stopped(paused.pid), what="paused after its third commit")
    assert offsets.entries_read(db.conn, LABEL) == 150 and outbox.pending(db.conn) > 0
    standby = Consume(tmp_path / "standby.log", *args)
    try:
        wait_for(lambda: "took over the lease" in standby.stderr(), what="takeover after TTL")
        wait_for(lambda: offsets.load(db.conn, LABEL) == last, what="standby drains")
        wait_for(lambda: outbox.pending(db.conn) == 0, what="standby publishes")
        before = _lobby_history_read(rclient, db)
        paused.signal(signal.SIGCONT)
        wait_for(lambda: "was taken over by" in paused.stderr(), what="the fence")
        wait_for(lambda: "standing by" in paused.stderr(), what="back to standby")
        time.sleep(0.3)  # room to misbehave
        assert _lobby_history_read(rclient, db) == before
        assert before[2] == 5000  # every entry counted once, across both workers
    finally:
        assert standby.stop() == 0
        paused.stop()
        db.close()
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert len(sources) == len(set(sources))  # the batch committed before the pause: once


@pytest.mark.sqlite_only  # operator commands on PostgreSQL: test_operator_safety
def test_commands_that_change_what_the_worker_owns_refuse_while_it_runs(
    redis_url: str, rclient: redis.Redis, db_location: str, tmp_path: Path
) -> None:
    _seed_games(db_location, 1)
    xadd_event(rclient, "g0", "probe_failed")
    worker = Consume(tmp_path / "w.log", *_consume_args(redis_url, db_location))
    try:
        wait_for(lambda: "holding the lease" in worker.stderr(), what="active")
        db_args = ["--db", db_location]
        drain = run_cli("consume", "--drain", "--redis-url", redis_url, *db_args)
        assert drain.returncode == 1 and drain.stderr.count("\n") == 1, drain.stderr
        assert str(worker.pid) in drain.stderr and "does not wait" in drain.stderr
        moved = run_cli("offsets", "set", LABEL, "0-0", "--yes", *db_args)
        assert moved.returncode == 1 and str(worker.pid) in moved.stderr, moved.stderr
        flushed = run_cli("outbox", "flush", "--redis-url", redis_url, *db_args)
        assert flushed.returncode == 1 and str(worker.pid) in flushed.stderr, flushed.stderr
        forced = run_cli("outbox", "flush", "--redis-url", redis_url, "--force", *db_args)
        assert forced.returncode == 0, forced.stderr
        check = run_cli("check", "--redis-url", redis_url, *db_args)
        assert check.returncode == 0 and f":{worker.pid}:" in check.stdout, check.stdout
        shown = run_cli("offsets", "show", "--json", *db_args)
        [row] = json.loads(shown.stdout)
        assert f":{worker.pid}:" in row["lease_holder"] and row["lease_epoch"] == 1
        forced = run_cli("offsets", "set", LABEL, "0-0", "--yes", "--force", *db_args)
        assert forced.returncode == 0, forced.stderr
    finally:
        assert worker.stop() == 0
    after = run_cli("offsets", "set", LABEL, "0-0", "--yes", "--db", db_location)
    assert after.returncode == 0, after.stderr  # released on SIGTERM: no --force needed


def _worker(redis_url: str, db_location: str, **overrides: object) -> Worker:
    options: dict[str, object] = {
        "redis_url": redis_url,
        "db_path": db_location,
        "block_ms": 50,
        "lease_poll_s": 0.02,
        "backoff_initial_s": 0.01,
    }
    options.update(overrides)
    return Worker(
        ConsumerSettings.model_validate(options),
        open_database(db_location),
        clock=lambda: FIXED_NOW_MS,
    )


def test_a_holder_on_another_machine_is_waited_out_until_its_lease_expires(
    db: Store, db_location: str, redis_url: str, rclient: redis.Redis
) -> None:
    add_games(db, ("g", Status.RUNNING))
    entry = xadd_event(rclient, "g", "container_exited")
    expires = int(time.time() * 1000) + 1500
    occupy(
        db, LABEL, holder="elsewhere:42:ab", node="elsewhere/boot/1", epoch=7, expires_at_ms=expires
    )
    worker = _worker(redis_url, db_location)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(0.5)
        assert offsets.load(db.conn, LABEL) is None and worker.metrics.lease_held._value.get() == 0
        wait_for(lambda: offsets.load(db.conn, LABEL) == entry, what="applied after expiry")
        assert time.time() * 1000 >= expires
        assert worker.metrics.lease_held._value.get() == 1
        assert worker.metrics.lease_takeovers._value.get() == 1
        held = lease_of(db, LABEL)
        assert held is not None and held.epoch == 8 and held.holder == worker.parts.holder
    finally:
        worker.request_stop()
        thread.join(timeout=10)
        worker.db.close()
    assert worker.metrics.lease_held._value.get() == 0
    released = lease_of(db, LABEL)
    assert released is not None and released.expires_at_ms == 0  # handed over on stop


def test_drain_raises_when_the_lease_is_held(db: Store, db_location: str, redis_url: str) -> None:
    occupy(db, LABEL, holder="elsewhere:42:ab", node="elsewhere/boot/1")
    worker = _worker(redis_url, db_location, drain=True)
    with pytest.raises(LeaseHeld, match="elsewhere:42:ab"):
        worker.run()
    worker.db.close()


def test_a_batch_after_a_takeover_rolls_back_whole(
    db: Store, db_location: str, redis_url: str, rclient: redis.Redis
) -> None:
    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "g", "container_exited")
    worker = _worker(redis_url, db_location)
    assert worker.ownership.become_active()
    occupy(db, LABEL, holder="other:1:x")  # another worker takes over (the lease had expired)
    with pytest.raises(LeaseLost, match="other:1:x"):
        worker.loop.apply(entries(rclient, STREAM))

    def apply() -> bool:
        worker.loop.apply(entries(rclient, STREAM))
        return True

    assert worker.loop.guarded(apply)  # stands by
    assert worker.metrics.lease_lost._value.get() == 1 and not worker.parts.held
    assert offsets.load(db.conn, LABEL) == "0-0"  # placed on taking, never moved
    assert outbox.pending(db.conn) == 0
    assert db.conn.execute("SELECT count(*) FROM runtime_history").fetchone()[0] == 0
    worker.close()
    worker.db.close()


def test_a_lease_lost_with_snapshots_unsent_never_sends_them_after_taking_it_back(
    db: Store, db_location: str, redis_url: str, rclient: redis.Redis
) -> None:
    """Paused past the TTL between commit and publish: the next holder publishes the rows
    from the outbox; when the first worker takes the label back it must not send them too."""
    from consumer.operations.outbox import flush_outbox

    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "g", "container_exited")
    worker = _worker(redis_url, db_location)
    assert worker.ownership.become_active()
    worker.loop.publish()  # the backlog (none): from now on the relay sends from memory
    worker.loop.apply(entries(rclient, STREAM))  # committed; the relay holds the row in memory
    assert worker.relay._in_memory, "the row waits in memory, as between commit and send"
    occupy(db, LABEL, holder="other:1:x")  # meanwhile another worker took the label over

    def renew() -> bool:
        with worker.parts.fenced():
            return True

    assert worker.loop.guarded(renew) and not worker.parts.held  # learns it lost: stands by
    # nothing of it waits to be sent: since each snapshot is appended once (the marks at
    # Redis), a re-send no longer shows on the stream, so this is where it is seen
    assert not worker.relay._in_memory and worker.relay.in_flight == 0
    assert (
        flush_outbox(db, rclient, "gm:lobby_events", force=True) == 1
    )  # the other holder publishes it
    free(db, LABEL)  # ... and releases the label
    assert worker.ownership.become_active()
    worker.loop.publish()
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert len(sources) == 1, sources
    worker.close()
    worker.db.close()
