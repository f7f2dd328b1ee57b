"""The publish fence at Redis: a publisher whose ownership passed on can never append.

The scripts on a real Redis (6.2 from the wheel, or 7 on PATH), the relay and the worker
that use them, the fence key's slot, a user without scripting rights (through the real
CLI), and the Redis timeout kept within half the lease. The network split that made this
necessary is driven end to end in test_network_split.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from consumer.contract.fence import fence_key, marks_key
from consumer.contract.partitions import key_slot
from consumer.devtools import embedded
from consumer.errors import PublishFenced
from consumer.runtime.fence import Fence, raise_fence
from consumer.runtime.relay import OutboxRelay
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import Store, outbox
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, xadd_event
from tests.processes import run_cli, wait_for
from tests.streams import entries

pytestmark = pytest.mark.backends("sqlite", "postgres")

LOBBY = "gm:lobby_events"
KEY = fence_key(LOBBY, "health_events")
MARKS = marks_key(LOBBY, "health_events", "store-1")


@given(st.text(min_size=1, max_size=30), st.text(min_size=1, max_size=10))
def test_the_fence_key_lives_in_the_lobby_streams_slot(stream: str, label: str) -> None:
    try:
        key = fence_key(stream, label)
    except ValueError as error:
        assert "}" in stream and "--lobby-stream" in str(error)
        return
    assert key_slot(key) == key_slot(stream) and key.endswith(":healthfsm:fence:" + label)


def test_the_default_fence_keys_are_the_documented_ones() -> None:
    assert KEY == "{gm:lobby_events}:healthfsm:fence:health_events"
    assert MARKS == "{gm:lobby_events}:healthfsm:published:health_events:store-1"


def test_a_snapshot_appended_before_its_publisher_died_is_never_appended_again(
    db: Store, rclient: redis.Redis
) -> None:
    """The publisher's chunk reached Redis, but it died before deleting the rows from the
    outbox: the next publisher sends them again, and Redis appends none of them twice, so
    no game's snapshot lands after a newer one (which a replay of two chunks would do)."""
    _rows(db, 25)
    first = _relay(db, rclient, 1)
    first._from_table = False
    first.committed(outbox.peek(db.conn, 100))
    first.send()  # written, never confirmed: the rows stay in the outbox
    wait_for(lambda: rclient.xlen(LOBBY) == 25, what="appended by Redis")
    first.close()  # dies before the delete
    with db.write() as conn:  # and newer snapshots of some of the same games
        outbox.enqueue(
            conn,
            [
                outbox.OutboxRow(f"{100 + i}-0", f"g{i}", "running", "x", i, FIXED_NOW_MS)
                for i in range(5)
            ],
        )
    assert _relay(db, rclient, 2).publish() == 5  # the 25 are settled, 5 appended
    sources = [f[b"source_entry_id"].decode() for _, f in entries(rclient, LOBBY)]
    assert len(sources) == len(set(sources)) == 30 and outbox.pending(db.conn) == 0


def _rows(db: Store, count: int, first: int = 0) -> None:
    with db.write() as conn:
        outbox.enqueue(
            conn,
            [
                outbox.OutboxRow(f"{i + 1}-0", f"g{i}", "running", "healthy", i, FIXED_NOW_MS)
                for i in range(first, first + count)
            ],
        )


def _relay(db: Store, client: redis.Redis, epoch: int) -> OutboxRelay:
    return OutboxRelay(db, client, LOBBY, chunk=10, fence=lambda _: Fence(KEY, {0: epoch}, MARKS))


def test_a_publisher_behind_the_fence_appends_nothing_and_learns_it(
    db: Store, rclient: redis.Redis
) -> None:
    assert raise_fence(rclient, KEY, {0: 2}, floor=1) == {}
    _rows(db, 25)
    with pytest.raises(PublishFenced, match="fence is at epoch 2, this worker holds epoch 1"):
        _relay(db, rclient, 1).publish()
    assert rclient.xlen(LOBBY) == 0 and outbox.pending(db.conn) == 25  # nothing lost
    assert _relay(db, rclient, 2).publish() == 25
    assert rclient.xlen(LOBBY) == 25 and outbox.pending(db.conn) == 0


def test_a_publish_raises_the_fence_so_older_epochs_are_refused_after_it(
    db: Store, rclient: redis.Redis
) -> None:
    _rows(db, 5)
    assert _relay(db, rclient, 3).publish() == 5  # a fence nobody raised: not behind it
    assert rclient.hget(KEY, "0") == b"3"
    _rows(db, 5, first=5)
    with pytest.raises(PublishFenced):
        _relay(db, rclient, 2).publish()
    assert rclient.xlen(LOBBY) == 5


def test_the_floor_fences_every_holder_of_an_earlier_partition_layout(
    db: Store, rclient: redis.Redis
) -> None:
    """After a re-partition a partition number means other games: a holder of the old
    layout must be refused even for a partition nobody of the new layout took yet."""
    assert raise_fence(rclient, KEY, {1: 9}, floor=8) == {}
    _rows(db, 3)
    old_layout = OutboxRelay(db, rclient, LOBBY, fence=lambda _: Fence(KEY, {3: 7}, MARKS))
    with pytest.raises(PublishFenced, match="partition 3's fence is at epoch 8"):
        old_layout.publish()
    assert rclient.xlen(LOBBY) == 0


def test_raising_never_lowers_and_names_what_is_already_newer(rclient: redis.Redis) -> None:
    assert raise_fence(rclient, KEY, {0: 5, 1: 5}, floor=4) == {}
    assert raise_fence(rclient, KEY, {0: 3, 1: 6}, floor=2) == {0: 5}
    fence = {str(k, "ascii"): int(v) for k, v in rclient.hgetall(KEY).items()}  # type: ignore[arg-type]
    assert fence == {"0": 5, "1": 6, "floor": 4}


def test_a_worker_raises_the_fence_of_what_it_takes_before_it_publishes(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    worker = make_worker(drain=False)
    assert worker.ownership.become_active()
    epoch = worker.parts.held[0]
    assert rclient.hget(KEY, "0") == str(epoch).encode()  # raised on taking: nothing sent yet
    assert rclient.xlen(LOBBY) == 0
    entry = xadd_event(rclient, "g", "container_exited")
    assert worker.loop.turn()
    worker.loop.publish()
    assert [f[b"source_entry_id"] for _, f in entries(rclient, LOBBY)] == [entry.encode()]
    worker.close()
    worker.db.close()


NO_SCRIPTS = (
    "on >pw resetkeys ~runtime:health_events ~gm:lobby_events"
    " ~{gm:lobby_events}:healthfsm:* resetchannels -@all"
    " +ping +xread +xrange +xrevrange +xinfo|stream +xadd +hget +hmget +hset"
)
"""The minimal ACL of releases before the fence: no scripting."""


def test_a_user_without_scripting_rights_is_refused_in_one_line_and_nothing_is_published(
    db: Store, db_location: str, tmp_path: Path
) -> None:
    add_games(db, ("g", Status.RUNNING))
    with embedded.running() as server:
        admin = redis.Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "worker", *NO_SCRIPTS.split())  # type: ignore[no-untyped-call]
        xadd_event(admin, "g", "container_exited")
        url = f"redis://worker:pw@127.0.0.1:{server.port}/0"
        args = ["--redis-url", url, "--db", db_location]
        drained = run_cli("consume", "--drain", *args)
        assert drained.returncode == 1, drained.stderr
        [line] = [ln for ln in drained.stderr.splitlines() if "error" in ln]
        assert "will not publish unfenced" in line and "+evalsha" in line, line
        assert "Traceback" not in drained.stderr
        checked = run_cli("check", *args)
        assert checked.returncode == 1 and checked.stderr.count("\n") == 1, checked.stderr
        assert "+evalsha" in checked.stderr
        assert admin.xlen(LOBBY) == 0
        admin.close()


@pytest.mark.sqlite_only
def test_check_says_the_publish_is_fenced(db_location: str, redis_url: str, db: Store) -> None:
    checked = run_cli("check", "--redis-url", redis_url, "--db", db_location)
    assert checked.returncode == 0 and "publish fenced at Redis" in checked.stdout, checked


@pytest.mark.sqlite_only
def test_a_redis_timeout_past_half_the_lease_is_refused_in_one_line(db_location: str) -> None:
    refused = run_cli("consume", "--lease-ttl", "5", "--redis-timeout", "5", "--db", db_location)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--redis-timeout" in refused.stderr and "at most 0.83" in refused.stderr


@given(st.floats(0.1, 3600), st.integers(1, 100_000), st.none() | st.floats(0.01, 10))
def test_a_worker_cut_off_from_redis_notices_within_half_its_lease(
    ttl: float, block_ms: int, timeout: float | None
) -> None:
    try:
        settings = ConsumerSettings(lease_ttl_s=ttl, block_ms=block_ms, redis_timeout_s=timeout)
    except ValueError:
        assert timeout is not None  # only an explicit value can be refused
        return
    assert 0 < settings.socket_timeout_s <= ttl / 2 + 1e-9


def test_a_new_store_on_the_same_lobby_stream_is_not_silenced(
    db: Store, rclient: redis.Redis, tmp_path: Path
) -> None:
    """Outbox seqs are a store's own (a new store starts again at 1): marks kept under one
    store's identity must not make Redis drop another store's snapshots."""
    from store import open_database

    other = open_database(tmp_path / "other.db", create=True)
    try:
        assert outbox.publisher_id(other.conn) != outbox.publisher_id(db.conn)
        for store in (db, other):
            _rows(store, 3)
            OutboxRelay(store, rclient, LOBBY).publish()  # as outbox flush does
        assert rclient.xlen(LOBBY) == 6
    finally:
        other.close()
