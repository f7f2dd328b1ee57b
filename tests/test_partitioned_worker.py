"""Workers sharing a label by partition, in process: the same records as one worker, every
partition's offset at the end, each game's snapshots in stream order, fair shares."""

from __future__ import annotations

import threading

import pytest
import redis

from consumer.contract.partitions import partition_of
from consumer.operations.partitions import repartition
from consumer.runtime.batch import BatchTarget, apply_batch
from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import Store, offsets, open_database, outbox, partitions, records
from store.errors import LeaseLost
from tests.conftest import (
    FIXED_NOW_MS,
    WorkerFactory,
    add_games,
    published,
    seed_flips,
    xadd_event,
)
from tests.ownership import free, occupy
from tests.processes import wait_for
from tests.streams import entries

pytestmark = pytest.mark.backends("sqlite", "postgres")

LABEL = "health_events"
GAMES = 40


def _games(db: Store, n: int = GAMES) -> None:
    add_games(db, *[(f"g{i}", Status.RUNNING) for i in range(n)])


def _records(db: Store) -> dict[str, tuple[str, str]]:
    return {r.game_id: (r.state.value, r.engine_health) for r in records.iter_all(db.conn)}


def test_one_worker_on_four_partitions_applies_what_one_partition_does(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    _games(db)
    last = seed_flips(rclient, GAMES, 1000)
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    worker = make_worker()
    worker.run()
    assert worker.metrics.total(worker.metrics.rebalances) == 4
    stored = partitions.load_offsets(db.conn, LABEL)
    assert sorted(stored) == [0, 1, 2, 3]
    assert {o.entry_id for o in stored.values()} == {last}
    assert all(o.entries_read == 1000 for o in stored.values())
    snapshots = published(rclient)
    assert len(snapshots) == 1000
    flips = [r for r in _records(db).values()]
    assert all(state == Status.RUNNING.value or True for state, _ in flips)


def _reference(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> tuple[dict[str, tuple[str, str]], dict[str, list[str]]]:
    """What one worker on one partition makes of the stream: records, and each game's
    snapshot sources in order (the model the shared run must equal)."""
    from consumer.settings import ConsumerSettings
    from store import open_database

    path = tmp_path_factory.mktemp("reference") / "ref.db"
    ref = open_database(str(path), create=True)
    try:
        _games(ref)
        settings = ConsumerSettings(
            redis_url=redis_url,
            db_path=str(path),
            drain=True,
            lobby_stream="reference:lobby",
        )
        worker = Worker(settings, ref, clock=lambda: FIXED_NOW_MS)
        worker.run()
        client = redis.Redis.from_url(redis_url)
        try:
            order = _snapshot_order(client, "reference:lobby")
        finally:
            client.close()
        return _records(ref), order
    finally:
        ref.close()


def _snapshot_order(client: redis.Redis, stream: str) -> dict[str, list[str]]:
    """Each game's snapshot sources in the order published, duplicates dropped."""
    order: dict[str, list[str]] = {}
    seen: set[str] = set()
    for fields in published(client, stream):
        source = fields["source_entry_id"]
        if source not in seen:
            seen.add(source)
            order.setdefault(fields["game_id"], []).append(source)
    return order


def _sharing(make_worker: WorkerFactory, db_location: str, n: int) -> list[Worker]:
    """``n`` consuming workers, each on a connection of its own."""
    from store import open_database

    return [
        make_worker(
            open_database(db_location),
            drain=False,
            lease_ttl_s=1.5,
            lease_poll_s=0.05,
            block_ms=50,
        )
        for _ in range(n)
    ]


def test_three_workers_share_six_partitions_and_equal_one_worker(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    redis_url: str,
    db_location: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    _games(db)
    last = seed_flips(rclient, GAMES, 3000)
    expected_records, expected_order = _reference(tmp_path_factory, redis_url)
    repartition(db, LABEL, 6, FIXED_NOW_MS)
    workers = _sharing(make_worker, db_location, 3)
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    try:

        def settled() -> bool:  # held, and what the dashboard and no-active-worker alert read
            return all(
                len(w.parts.held) == 2
                and w.metrics.registry.get_sample_value("healthfsm_partitions_held") == 2
                and w.metrics.registry.get_sample_value("healthfsm_lease_held") == 1
                for w in workers
            )

        wait_for(settled, 20, "two partitions each, and the gauges say so")
        wait_for(
            lambda: (
                {o.entry_id for o in partitions.load_offsets(db.conn, LABEL).values()} == {last}
            ),
            20,
            "every partition at the last entry",
        )
        wait_for(lambda: len(published(rclient)) >= 3000, 20, "every snapshot published")
    finally:
        for w in workers:
            w.request_stop()
        for t in threads:
            t.join(10)
        for w in workers:
            w.db.close()
    assert _records(db) == expected_records
    assert _snapshot_order(rclient, "gm:lobby_events") == expected_order
    held = [set(w.parts.held) for w in workers]
    assert not any(held), "every partition released on stop"
    # the counters add up: each entry applied or rejected by one worker, counted there
    consumed = [
        w.metrics.registry.get_sample_value("healthfsm_events_consumed_total") for w in workers
    ]
    assert sum(c or 0 for c in consumed) == rclient.xlen("runtime:health_events") == 3000


def _occupy(db: Store, *held: int, holder: str = "elsewhere:1:x") -> None:
    """Another live worker holds these partitions (a far expiry, another node)."""
    occupy(db, LABEL, *held, holder=holder)


def _free(db: Store) -> None:
    free(db, LABEL)


def _games_of(partition: int, count: int, n: int = GAMES) -> set[str]:
    return {f"g{i}" for i in range(n) if partition_of(f"g{i}", count) == partition}


def test_a_batch_rolls_back_whole_when_any_held_partition_was_taken(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    _games(db)
    seed_flips(rclient, GAMES, 200)
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    worker = make_worker()
    worker.parts.join()
    taken, _ = worker.parts.acquire(4)
    assert [partition for partition, _ in taken] == [0, 1, 2, 3]
    _occupy(db, 2)  # taken over while this worker was paused
    before = _records(db)
    batch = entries(rclient, "runtime:health_events")
    with pytest.raises(LeaseLost, match="taken over"):
        apply_batch(
            BatchTarget(
                db,
                worker.machine,
                "runtime:health_events",
                LABEL,
                fence=worker.parts.fence,
                save_offset=worker.held_offsets.save_batch,
            ),
            batch,
            now_ms=FIXED_NOW_MS,
        )
    assert worker.parts.held == {}
    assert _records(db) == before
    assert partitions.load_offsets(db.conn, LABEL) == {}, "no offset moved"


def test_a_worker_applies_only_the_partitions_it_holds(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    _games(db)
    last = seed_flips(rclient, GAMES, 400)
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    _occupy(db, 2, 3)
    worker = make_worker()
    worker.run()
    got = _records(db)
    for partition in (0, 1):
        assert all(got[g][1] != "" for g in _games_of(partition, 4)), "its own: applied"
    for partition in (2, 3):
        assert all(got[g] == ("running", "") for g in _games_of(partition, 4)), "not its own"
    stored = partitions.load_offsets(db.conn, LABEL)
    assert stored[0].entry_id == stored[1].entry_id == last
    assert stored[2].entry_id == stored[3].entry_id == "0-0"
    assert offsets.load(db.conn, LABEL) == "0-0", "stream_offsets keeps the low-water mark"
    sources = {s["game_id"] for s in published(rclient)}
    assert sources and sources <= _games_of(0, 4) | _games_of(1, 4)


def test_merging_partitions_starts_at_the_lowest_offset_and_applies_nothing_twice(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    _games(db)
    last = seed_flips(rclient, GAMES, 400)
    expected_records, expected_order = _reference(tmp_path_factory, redis_url)
    repartition(db, LABEL, 2, FIXED_NOW_MS)
    _occupy(db, 1)
    make_worker().run()  # partition 0 only: at the last entry; partition 1 at the start
    assert partitions.load_offsets(db.conn, LABEL)[0].entry_id == last
    _free(db)
    change = repartition(db, LABEL, 1, FIXED_NOW_MS)
    assert change["offsets"] == {"0": "0-0"}, "the lowest of the old offsets"
    make_worker().run()  # reads everything again; partition 0's games skip what they had
    assert _records(db) == expected_records
    changes = db.conn.execute("SELECT count(*) FROM runtime_history").fetchone()[0]
    assert changes == sum(len(v) for v in expected_order.values()), "no change applied twice"
    assert _snapshot_order(rclient, "gm:lobby_events") == expected_order
    assert len(published(rclient)) == sum(len(v) for v in expected_order.values())
    assert offsets.load(db.conn, LABEL) == last


def test_the_relay_leaves_other_partitions_rows_to_their_holder(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    _games(db)
    repartition(db, LABEL, 2, FIXED_NOW_MS)
    _occupy(db, 1)
    theirs = sorted(_games_of(1, 2))[0]
    mine = sorted(_games_of(0, 2))[0]
    with db.write() as conn:
        outbox.enqueue(
            conn,
            [
                outbox.OutboxRow("1-1", theirs, "running", "healthy", 0, FIXED_NOW_MS),
                outbox.OutboxRow("1-2", mine, "running", "healthy", 0, FIXED_NOW_MS),
            ],
        )
    xadd_event(rclient, mine, "probe_failed")
    make_worker().run()
    assert [s["game_id"] for s in published(rclient)] == [mine, mine]
    left = outbox.peek(db.conn, 10)
    assert [row.game_id for _, row in left] == [theirs], "left for partition 1's holder"


def test_a_partition_is_released_only_once_its_outbox_rows_are_published(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    db_location: str,
) -> None:
    _games(db)
    seed_flips(rclient, GAMES, 20_000)
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    (worker,) = _sharing(make_worker, db_location, 1)
    worker.settings = worker.settings.model_copy(update={"batch_size": 50})
    left_behind: list[int] = []
    release = worker.parts.release

    def checked_release(chosen: list[int] | None = None) -> list[int]:
        rows = outbox.peek(worker.db.conn, 100_000)
        left_behind.extend(
            seq for seq, row in rows if chosen and worker.map.of(row.game_id) in chosen
        )
        return release(chosen)

    worker.parts.release = checked_release  # type: ignore[method-assign,assignment]
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: len(worker.parts.held) == 4, 10, "all four taken")
        wait_for(lambda: worker.totals.snapshots_published > 0, 10, "publishing")
        newcomer = make_worker(open_database(db_location))
        newcomer.parts.join()  # a second worker: the first now holds twice its share
        wait_for(lambda: len(worker.parts.held) == 2, 10, "the extra two released")
        assert worker.totals.entries < 20_000, "released mid-backlog, at a batch boundary"
    finally:
        worker.request_stop()
        thread.join(10)
        worker.db.close()
        newcomer.db.close()
    assert left_behind == [], "rows of a released partition were still unpublished"


def test_each_worker_takes_its_fair_share_and_no_more(
    db: Store, make_worker: WorkerFactory
) -> None:
    repartition(db, LABEL, 7, FIXED_NOW_MS)
    crew = [make_worker() for _ in range(3)]
    for worker in crew:
        worker.parts.join()  # all three count before anyone takes
    shares = []
    for worker in crew:
        taken, _ = worker.parts.acquire(7)
        shares.append(len(taken))
    ranked = sorted(crew, key=lambda w: w.parts.holder)
    assert [len(w.parts.held) for w in ranked] == [3, 2, 2], "7 // 3, one more for the first"
    assert sum(shares) == 7
    held = [set(w.parts.held) for w in crew]
    assert set.union(*held) == set(range(7)) and sum(map(len, held)) == 7, "none held twice"
    late = make_worker()
    late.parts.join()
    taken, _ = late.parts.acquire(7)
    assert taken == [], "nothing free: a newcomer waits for the others to give some up"
    surplus = sum(len(w.parts.held) - w.parts.look(7)[0] for w in ranked)
    assert surplus == late.parts.look(7)[0] >= 1, "the others now hold the newcomer's share"


@pytest.mark.backends("postgres")
def test_a_worker_joining_while_partitions_set_runs_gets_the_new_count_s_rows(
    db: Store, db_location: str
) -> None:
    """A worker's first ``join`` lands while ``partitions set 8 -> 4`` is in its
    transaction, between deleting the old rows and setting the new count (the order
    ``change_count`` writes them in). The worker waits for it and gives the label the rows
    of 4 partitions: before the count was held, it read 8, the rows of partitions 4 to 7
    came back, no worker took the 4 partitions again (rows and count disagreed) and the
    label stalled for good (seen in the chaos test under load)."""
    repartition(db, LABEL, 8, FIXED_NOW_MS)
    operator, watcher = open_database(db_location), open_database(db_location)
    joining = Worker(ConsumerSettings(redis_url="redis://127.0.0.1:1", label=LABEL), db)
    failed: list[BaseException] = []

    def join() -> None:
        try:
            joining.parts.join()
        except BaseException as error:
            failed.append(error)

    thread = threading.Thread(target=join)
    try:
        with operator.write() as conn:
            partitions.held_count(conn, LABEL)  # as change_count starts
            conn.execute("DELETE FROM partition_owners WHERE label = ? AND partition >= 4", [LABEL])
            thread.start()
            wait_for(lambda: _waits_for_a_lock(watcher) or bool(failed), 30, "a wait")
            conn.execute("UPDATE label_partitions SET partitions = 4 WHERE label = ?", [LABEL])
        thread.join(30)
    finally:
        operator.close()
        watcher.close()
        joining.close()
    assert not failed and not thread.is_alive()
    assert sorted(partitions.read_leases(db.conn, LABEL)) == [0, 1, 2, 3]


def _waits_for_a_lock(db: Store) -> bool:
    """Whether some session of the test database waits for a lock another one holds."""
    found = db.conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND pid <> pg_backend_pid()"
    ).fetchone()
    return bool(found and found[0])


def test_lease_rows_beyond_the_count_are_cleared_and_the_partitions_taken(
    db: Store, make_worker: WorkerFactory
) -> None:
    """A row of a partition beyond the count (what that race left in a store) no longer
    stalls the label: the next look clears it, and the one after takes the partitions."""
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    worker = make_worker(label=LABEL)
    worker.parts.join()
    with db.write() as conn:
        conn.execute(
            "INSERT INTO partition_owners (label, partition, holder, node, epoch,"
            " acquired_at_ms, expires_at_ms, released_at_ms) VALUES (?, 6, '', '', 0, 0, 0, 0)",
            [LABEL],
        )
    taken, seen = worker.parts.acquire(4)
    assert taken == [] and len(seen) == 5, "rows and count disagree: nothing is taken"
    assert sorted(partitions.read_leases(db.conn, LABEL)) == [0, 1, 2, 3], "the stray row went"
    taken, _ = worker.parts.acquire(4)
    assert [partition for partition, _ in taken] == [0, 1, 2, 3]


def test_a_worker_that_looked_before_a_re_partition_takes_nothing_under_the_old_count(
    db: Store, make_worker: WorkerFactory
) -> None:
    """The worker looked at 8 partitions; ``partitions set 4`` committed before it took
    any. It takes nothing (and looks again): taking partitions 0 to 3 "of 8" made it hold
    all four new partitions while applying the games of two, and moving the other two's
    offsets past entries nobody applied (records diverged in the chaos test under load)."""
    repartition(db, LABEL, 8, FIXED_NOW_MS)
    worker = make_worker(label=LABEL)
    worker.parts.join()
    looked = worker.parts.look(8)
    assert len(looked[1]) == 8
    repartition(db, LABEL, 4, FIXED_NOW_MS)
    worker.parts.look = lambda count: looked  # type: ignore[method-assign]
    taken, _ = worker.parts.acquire(8)
    assert taken == [] and worker.parts.held == {}
