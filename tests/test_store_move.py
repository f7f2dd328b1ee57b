"""Moving a SQLite store into PostgreSQL moves all of it: every table is copied or named as
left behind with the reason, and a label's partitions move with their count, offsets and
lease epochs, so a worker on PostgreSQL goes on where the SQLite one stopped.

The target is PostgreSQL whatever the test: the ``backends`` marker makes ``db_location``
a fresh schema there (``db_path`` is the SQLite source).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import redis

from statemachine import Status
from store import Store, open_database, partitions
from store.sql import Sql
from store.transfer import LEFT_BEHIND, TABLES
from tests.conftest import FIXED_NOW_MS, add_games, seed_flips, xadd_event
from tests.processes import cli_in_process as cli
from tests.streams import as_id, entries

pytestmark = pytest.mark.backends("postgres")

STREAM = "runtime:health_events"
LABEL = "health_events"
OTHER = "audit"
"""A second label, left at the default count of one partition."""

GAMES = 12


def _tables(path: Path) -> set[str]:
    """The store's own tables (views and SQLite's ``sqlite_*`` tables are not)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%'"
            " ESCAPE '\\'"
        ).fetchall()
    finally:
        conn.close()
    return {str(name) for (name,) in rows}


def test_every_table_is_moved_or_left_behind_with_a_reason(db_path: Path) -> None:
    """A table a later migration adds fails here until the move copies it or says why not."""
    open_database(db_path, create=True).close()
    tables = _tables(db_path)
    copied, left = set(TABLES), set(LEFT_BEHIND)
    forgotten = sorted(tables - copied - left)
    assert not forgotten, (
        f"tables neither copied by store.transfer.TABLES nor named in LEFT_BEHIND: {forgotten}"
    )
    assert not copied & left, f"both copied and left behind: {sorted(copied & left)}"
    assert not (copied | left) - tables, f"no such tables: {sorted((copied | left) - tables)}"
    assert len(TABLES) == len(copied), "a table is copied twice"
    assert all(reason.strip() for reason in LEFT_BEHIND.values()), "a reason is blank"


def _rows(conn: Sql, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` by column name, in an order both backends agree on."""
    cursor = conn.execute(f"SELECT * FROM {table}")
    names = [column[0] for column in cursor.description]
    return sorted((dict(zip(names, row, strict=True)) for row in cursor.fetchall()), key=repr)


def _take_and_release(conn: Sql, label: str, partition: int, times: int) -> None:
    """Holders of the old store took ``partition`` ``times`` times and let it go (in 2023:
    none is live now), so its epoch grew by ``times``."""
    for n in range(times):
        seen = partitions.read_leases(conn, label)[partition]
        taken = partitions.try_take(
            conn, seen, f"old-host:{100 + n}:beef", "old-node", FIXED_NOW_MS, 1000
        )
        assert taken is not None
        partitions.release(conn, label, taken.holder, {partition: taken.epoch}, FIXED_NOW_MS)


def _four_partitions(db: Store) -> None:
    """``LABEL`` re-partitioned to 4 (each new partition takes over the one old one), each
    partition at its own offset and epoch; ``OTHER`` with one partition and its offset."""
    with db.write() as conn:
        partitions.change_count(conn, LABEL, 4, {p: [0] for p in range(4)}, FIXED_NOW_MS)
        for partition, times in {0: 1, 1: 3, 3: 2}.items():
            _take_and_release(conn, LABEL, partition, times)
        placed = {p: (f"{FIXED_NOW_MS + p}-{p}", 10 * (p + 1)) for p in range(4)}
        partitions.set_offsets(conn, LABEL, placed, FIXED_NOW_MS)
        partitions.ensure(conn, OTHER)
        _take_and_release(conn, OTHER, 0, 1)
        partitions.set_offsets(conn, OTHER, {0: ("5-0", 3)}, FIXED_NOW_MS)


def test_four_partitions_move_with_their_count_offsets_and_epochs(
    capsys: pytest.CaptureFixture[str], db_path: Path, db_location: str
) -> None:
    lite = open_database(db_path, create=True)
    try:
        add_games(lite, ("a", Status.RUNNING), ("b", Status.STARTING))
        _four_partitions(lite)
    finally:
        lite.close()

    code, out, err = cli(capsys, "migrate", "--from-sqlite", str(db_path), "--db", db_location)
    assert code == 0, err
    moved = json.loads(out)
    assert set(moved) == {"from", "to", "outbox_seq", *TABLES}, "a count per copied table"
    assert moved["runtime_records"] == 2
    assert moved["label_partitions"] == 2
    assert moved["partition_owners"] == 4 + 1
    assert moved["partition_offsets"] == 4 + 1
    assert moved["stream_offsets"] == 2

    lite, target = open_database(db_path, read_only=True), open_database(db_location)
    try:
        assert partitions.counts(target.conn) == {LABEL: 4, OTHER: 1}
        for label in (LABEL, OTHER):
            assert partitions.load_offsets(target.conn, label) == partitions.load_offsets(
                lite.conn, label
            )
            assert partitions.read_leases(target.conn, label) == partitions.read_leases(
                lite.conn, label
            )
        shown = partitions.load_offsets(target.conn, LABEL)
        assert {p: (o.entry_id, o.entries_read) for p, o in shown.items()} == {
            p: (f"{FIXED_NOW_MS + p}-{p}", 10 * (p + 1)) for p in range(4)
        }
        epochs = {p: lease.epoch for p, lease in partitions.read_leases(target.conn, LABEL).items()}
        assert epochs == {0: 2, 1: 4, 2: 1, 3: 3}, "epochs go on from the source's"
        assert not partitions.live_leases(target.conn, FIXED_NOW_MS + 10**6)
        for table in TABLES:
            assert _rows(target.conn, table) == _rows(lite.conn, table), table

        with target.write() as conn:  # the next holder's epoch is above every earlier one
            seen = partitions.read_leases(conn, LABEL)[1]
            taken = partitions.try_take(conn, seen, "new-host:1:cafe", "new-node", 0, 1000)
        assert taken is not None and taken.epoch == 5
    finally:
        lite.close()
        target.close()


def test_a_live_partition_lease_on_the_source_refuses_the_move(
    capsys: pytest.CaptureFixture[str], db_path: Path, db_location: str
) -> None:
    lite = open_database(db_path, create=True)
    try:
        _four_partitions(lite)
        with lite.write() as conn:
            seen = partitions.read_leases(conn, LABEL)[2]
            far = FIXED_NOW_MS * 10  # live for centuries
            assert partitions.try_take(conn, seen, "alive:7:f00d", "elsewhere", far, 1000)
    finally:
        lite.close()

    code, _, err = cli(capsys, "migrate", "--from-sqlite", str(db_path), "--db", db_location)
    assert code == 1 and err.count("\n") == 1, err
    assert f"label {LABEL!r}, partition 2 (alive:7:f00d (epoch 2))" in err, err


def test_a_target_a_worker_already_wrote_to_is_refused(
    capsys: pytest.CaptureFixture[str], db_path: Path, db_location: str
) -> None:
    """A worker started on the target before the move left lease rows but no records."""
    open_database(db_path, create=True).close()
    target = open_database(db_location, create=True)
    try:
        with target.write() as conn:
            partitions.ensure(conn, LABEL)
    finally:
        target.close()
    code, _, err = cli(capsys, "migrate", "--from-sqlite", str(db_path), "--db", db_location)
    assert code == 1 and err.count("\n") == 1, err
    assert "already holds 1 rows in label_partitions" in err, err


def _shown(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def _records(capsys: pytest.CaptureFixture[str], db: str) -> list[dict[str, Any]]:
    """``runtime list``, without the wall-clock time each drain stamped."""
    listed = _shown(capsys, "runtime", "list", "--db", db)
    return [{k: v for k, v in row.items() if k != "updated_at_ms"} for row in listed]


def _positions(capsys: pytest.CaptureFixture[str], db: str, redis_url: str) -> Any:
    """``partitions show``: count, epoch and offset of each partition (not the holder,
    which each drain names anew)."""
    rows = _shown(capsys, "partitions", "show", "--db", db, "--redis-url", redis_url)
    keys = ("label", "partition", "partitions", "epoch", "entry_id", "entries_read")
    return [{key: row[key] for key in keys} for row in rows]


def _drain(capsys: pytest.CaptureFixture[str], db: str, redis_url: str) -> None:
    code, _, err = cli(capsys, "consume", "--drain", "--redis-url", redis_url, "--db", db)
    assert code == 0, err


def test_a_move_mid_stream_then_a_drain_of_the_same_events_on_each_store_agrees(
    capsys: pytest.CaptureFixture[str],
    db_path: Path,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
) -> None:
    source = str(db_path)
    lite = open_database(db_path, create=True)
    try:
        add_games(lite, *[(f"g{i}", Status.RUNNING) for i in range(GAMES)])
    finally:
        lite.close()
    code, _, err = cli(capsys, "partitions", "set", LABEL, "4", "--yes", "--db", source)
    assert code == 0, err
    seed_flips(rclient, GAMES, 4 * GAMES)
    xadd_event(rclient, "ghost", "probe_failed")  # a dead letter
    _drain(capsys, source, redis_url)
    ids = [as_id(entry_id) for entry_id, _ in entries(rclient, STREAM)]
    lite = open_database(db_path)
    try:  # mid-stream: partitions 1 to 3 were read back to different points (a rewind)
        with lite.write() as conn:
            placed = {p: (ids[10 * p - 1], 10 * p) for p in (1, 2, 3)}
            partitions.set_offsets(conn, LABEL, placed, FIXED_NOW_MS)
    finally:
        lite.close()

    code, out, err = cli(capsys, "migrate", "--from-sqlite", source, "--db", db_location)
    assert code == 0, err
    moved = json.loads(out)
    assert moved["label_partitions"] == 1 and moved["partition_offsets"] == 4, moved
    assert moved["partition_owners"] == 4 and moved["dead_letters"] == 1, moved
    assert _positions(capsys, db_location, redis_url) == _positions(capsys, source, redis_url)
    assert _records(capsys, db_location) == _records(capsys, source)

    seed_flips(rclient, GAMES, 3 * GAMES + GAMES // 2)  # the same new events for both
    xadd_event(rclient, "g0", "container_exited")
    _drain(capsys, source, redis_url)
    _drain(capsys, db_location, redis_url)
    after = _positions(capsys, db_location, redis_url)
    assert after == _positions(capsys, source, redis_url)
    assert {row["partitions"] for row in after} == {4}
    stream = entries(rclient, STREAM)
    assert {row["entry_id"] for row in after} == {as_id(stream[-1][0])}
    assert {row["entries_read"] for row in after} == {len(stream)}
    assert _records(capsys, db_location) == _records(capsys, source)
