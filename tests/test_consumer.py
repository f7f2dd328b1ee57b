"""The consume path end to end against the real Redis and SQLite files."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import redis

from consumer.errors import InjectedFault
from consumer.runtime import faults
from consumer.runtime.faults import FaultPoint
from consumer.runtime.worker import Worker
from statemachine import Status
from store import dead_letters, offsets, outbox, records
from store.admin import set_status
from store.backend import Store
from store.sqlite.store import SqliteSql
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, published, xadd_event
from tests.streams import as_id, entries

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"


def record_of(db: Store, game_id: str) -> tuple[str, str]:
    record = records.get(db.conn, game_id)
    return record.state.value, record.engine_health


def test_events_update_records_and_publish_snapshots(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g1", Status.RUNNING), ("g2", Status.ENGINE_UNREACHABLE))
    records.save(db.conn, records.get(db.conn, "g1"))
    db.conn.execute("UPDATE runtime_records SET current_turn = 42 WHERE game_id = 'g1'")
    first = xadd_event(rclient, "g1", "container_exited")
    second = xadd_event(rclient, "g2", "probe_recovered")
    make_worker().run()
    assert record_of(db, "g1") == ("engine_unreachable", "exited")
    assert record_of(db, "g2") == ("running", "healthy")
    assert records.get(db.conn, "g1").updated_at_ms == FIXED_NOW_MS
    assert published(rclient) == [
        {
            "event_type": "runtime_snapshot_update",
            "game_id": "g1",
            "runtime_status": "engine_unreachable",
            "engine_health_summary": "exited",
            "current_turn": "42",
            "player_turn_stats": "[]",
            "occurred_at_ms": str(FIXED_NOW_MS),
            "source_entry_id": first,
        },
        {
            "event_type": "runtime_snapshot_update",
            "game_id": "g2",
            "runtime_status": "running",
            "engine_health_summary": "healthy",
            "current_turn": "0",
            "player_turn_stats": "[]",
            "occurred_at_ms": str(FIXED_NOW_MS),
            "source_entry_id": second,
        },
    ]
    assert offsets.load(db.conn, "health_events") == second
    assert outbox.pending(db.conn) == 0


def test_snapshots_carry_the_record_right_after_each_event(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    for event_type in ["probe_failed", "container_exited", "probe_failed", "probe_recovered"]:
        xadd_event(rclient, "g", event_type)
    make_worker().run()
    assert [(s["runtime_status"], s["engine_health_summary"]) for s in published(rclient)] == [
        ("running", "probe_failed"),
        ("engine_unreachable", "exited"),
        ("engine_unreachable", "probe_failed"),
        ("running", "healthy"),
    ]


def test_debounce_skips_repeated_summaries(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    for event_type in ["probe_failed", "probe_failed", "container_started", "container_started"]:
        xadd_event(rclient, "g", event_type)
    make_worker().run()
    assert [s["engine_health_summary"] for s in published(rclient)] == ["probe_failed", "healthy"]


def test_bad_entries_become_dead_letters_and_never_block(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    bad = [
        rclient.xadd(
            "runtime:health_events", {"event_type": "probe_failed", "occurred_at_ms": "1"}
        ),
        rclient.xadd(
            "runtime:health_events",
            {"game_id": b"\xff", "event_type": "probe_failed", "occurred_at_ms": "1"},
        ),
        rclient.xadd(
            "runtime:health_events",
            {"game_id": "g", "event_type": "probe_failed", "occurred_at_ms": "1.0"},
        ),
    ]
    unknown_type = xadd_event(rclient, "g", "container_rebooted")
    unknown_game = xadd_event(rclient, "nope", "probe_failed")
    good = xadd_event(rclient, "g", "container_exited")
    make_worker(batch_size=2).run()
    assert record_of(db, "g") == ("engine_unreachable", "exited")
    kept = dead_letters.list_recent(db.conn)[::-1]
    assert [(row["entry_id"], row["reason"]) for row in kept] == [
        (as_id(bad[0]), "missing_field"),
        (as_id(bad[1]), "invalid_field"),
        (as_id(bad[2]), "invalid_field"),
        (unknown_type, "unknown_event_type"),
        (unknown_game, "unknown_game"),
    ]
    assert '"game_id": "\\\\xff"' in str(kept[1]["fields"])
    assert offsets.load(db.conn, "health_events") == good
    assert [s["source_entry_id"] for s in published(rclient)] == [good]


def test_oversized_dead_letter_fields_are_truncated(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    rclient.xadd(
        "runtime:health_events",
        {"game_id": "x" * 100_000, "event_type": "nope", "occurred_at_ms": "1"},
    )
    make_worker().run()
    [row] = dead_letters.list_recent(db.conn)
    assert len(str(row["fields"]).encode()) <= dead_letters.RAW_FIELDS_LIMIT


def test_cas_conflict_with_concurrent_admin_set_status(
    db: Store, db_location: str, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    """Health events and an operator holding statuses, truly at the same time: every change
    in the history is an allowed one, and each starts from the status the one before it
    left (no update lost), so a held status is never overwritten by a health event."""
    from statemachine.errors import StatusConflict
    from store import open_database

    games = [f"g{i}" for i in range(8)]
    add_games(db, *[(g, Status.RUNNING) for g in games])
    worker = make_worker(drain=False, block_ms=20, batch_size=7)
    consumer = threading.Thread(target=worker.run)
    consumer.start()
    done = threading.Event()

    def operator() -> None:  # another process, in effect: its own connection
        admin = open_database(db_location)
        holds = 0
        while not done.is_set():
            for game in games:
                for expected, to in (
                    (Status.RUNNING, Status.GENERATION_IN_PROGRESS),
                    (Status.GENERATION_IN_PROGRESS, Status.RUNNING),
                ):
                    with contextlib.suppress(StatusConflict):
                        set_status(admin, game, expected, to, FIXED_NOW_MS)
                        holds += 1
                    time.sleep(0.002)  # an operator, not a write lock held in a tight loop
        admin.close()
        assert holds > 0

    admin_thread = threading.Thread(target=operator)
    admin_thread.start()
    try:
        for round_ in range(150):
            for game in games:
                kind = ("container_exited", "probe_recovered")[round_ % 2]
                xadd_event(rclient, game, kind)
            time.sleep(0.002)  # a stream that flows, so batches and operator changes interleave
        last = xadd_event(rclient, games[0], "probe_failed")
        deadline = time.monotonic() + 30
        while worker.offset != last and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        admin_thread.join(timeout=30)
        worker.request_stop()
        consumer.join(timeout=10)
    assert worker.offset == last
    causes = _history_is_a_chain_of_allowed_changes(db, games)
    assert {"admin", "container_exited", "probe_recovered"} <= causes  # all three raced


def _history_is_a_chain_of_allowed_changes(db: Store, games: list[str]) -> set[str]:
    """Per game, in commit order: each change starts where the last one ended, is allowed,
    and the record ends where the history does. Returns the causes seen."""
    from statemachine import ALLOWED_CHANGES

    rows = db.conn.execute(
        "SELECT game_id, cause, from_status, to_status FROM runtime_history ORDER BY id"
    ).fetchall()
    allowed = {(a.value, b.value) for a, b in ALLOWED_CHANGES}
    causes = set()
    for game in games:
        status = "running"
        for game_id, cause, before, after in rows:
            if game_id != game:
                continue
            assert before == status, (game, cause, before, status)  # nothing lost between
            assert before == after or (before, after) in allowed, (game, cause, before, after)
            status = after
            causes.add(cause)
        assert record_of(db, game)[0] == status
    return causes


def test_restart_resumes_from_offset_with_persisted_debounce(
    db_location: str, db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "g", "probe_failed")
    make_worker().run()
    db.close()
    from store import open_database

    reopened = open_database(db_location)
    try:
        xadd_event(rclient, "g", "probe_failed")  # same summary: no snapshot after restart
        last = xadd_event(rclient, "g", "container_started")
        worker = make_worker(reopened)
        worker.run()
        assert worker.totals.entries == 2  # the first entry was not read again
        assert [s["engine_health_summary"] for s in published(rclient)] == [
            "probe_failed",
            "healthy",
        ]
        assert offsets.load(reopened.conn, "health_events") == last
    finally:
        reopened.close()


@pytest.mark.parametrize("point", list(FaultPoint))
def test_crash_at_each_point_loses_nothing_and_applies_once(
    point: FaultPoint,
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    ids = [
        xadd_event(rclient, "g", t)
        for t in ["probe_failed", "container_exited", "probe_recovered", "probe_failed"]
    ]
    faults.arm(point, after=2)
    with pytest.raises(InjectedFault):
        make_worker(batch_size=2).run()
    make_worker(batch_size=2).run()
    assert record_of(db, "g") == ("running", "probe_failed")
    sources = [s["source_entry_id"] for s in published(rclient)]
    # every snapshot, in order, once: after a crash between the append and the outbox
    # delete the second batch is sent again, and Redis drops what it already appended
    assert sources == ids
    assert outbox.pending(db.conn) == 0


def test_a_batch_that_fails_before_commit_is_applied_again_from_what_was_committed(
    db: Store, rclient: redis.Redis
) -> None:
    """The records a failed batch changed in memory must not be the next attempt's start."""
    from consumer.runtime.batch import BatchTarget, apply_batch
    from statemachine import get_machine

    add_games(db, ("g", Status.RUNNING))
    cache, machine = db.record_loader(), get_machine()
    first = xadd_event(rclient, "g", "probe_failed")

    def apply(after: str) -> object:
        batch = entries(rclient, "runtime:health_events", min=f"({after}")
        return apply_batch(
            BatchTarget(db, machine, STREAM, "health_events", cache=cache), batch, now_ms=1
        )

    apply("0-0")  # the record is cached now
    exited = xadd_event(rclient, "g", "container_exited")
    faults.arm(FaultPoint.BEFORE_COMMIT)
    with pytest.raises(InjectedFault):
        apply(first)
    apply(first)
    assert record_of(db, "g") == ("engine_unreachable", "exited")
    pending = [row.source_entry_id for _, row in outbox.peek(db.conn, 10)]
    assert pending == [first, exited]


def test_outbox_left_by_a_crash_is_published_before_reading_on(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    first = xadd_event(rclient, "g", "probe_failed")
    faults.arm(FaultPoint.AFTER_COMMIT)
    with pytest.raises(InjectedFault):
        make_worker().run()
    assert outbox.pending(db.conn) == 1 and published(rclient) == []
    make_worker().run()
    assert [s["source_entry_id"] for s in published(rclient)] == [first]


@pytest.mark.parametrize("batch_size", [2, 3, 7, 1000])
def test_batch_size_changes_nothing(
    batch_size: int,
    tmp_path: object,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    from pathlib import Path

    from store import open_database

    games = [f"g{i}" for i in range(4)]
    event_types = [
        "probe_failed",
        "container_exited",
        "probe_recovered",
        "container_oom",
        "container_started",
        "inspect_unhealthy",
        "container_disappeared",
    ]
    for index, (game, event_type) in enumerate(itertools.product([*games, "ghost"], event_types)):
        xadd_event(rclient, game, event_type, occurred_at_ms=str(index + 1))
        if index % 5 == 0:
            xadd_event(rclient, game, event_type, occurred_at_ms="bad")
    results = []
    for size, stream in [(1, "out:one"), (batch_size, "out:many")]:
        database = open_database(Path(str(tmp_path)) / f"b{size}-{stream}.db", create=True)
        add_games(database, *[(g, Status.RUNNING) for g in games])
        make_worker(database, batch_size=size, lobby_stream=stream).run()
        results.append(
            (
                [records.as_dict(r) for r in records.iter_all(database.conn)],
                published(rclient, stream),
                [(r["entry_id"], r["reason"]) for r in dead_letters.list_recent(database.conn)],
                offsets.load(database.conn, "health_events"),
            )
        )
        database.close()
    assert results[0] == results[1]
    assert len(results[0][1]) > 10


def _start_behind_a_write_lock(
    db_location: Path, make_worker: WorkerFactory, **overrides: object
) -> tuple[sqlite3.Connection, Store, Worker, threading.Thread]:
    """Another connection holds the write lock (an admin command); a worker with a short
    busy timeout starts behind it in a thread."""
    from store import open_database

    blocker = sqlite3.connect(db_location, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    impatient = open_database(db_location, busy_timeout_s=0.05)
    worker = make_worker(impatient, **overrides)
    thread = threading.Thread(target=worker.run)
    thread.start()
    return blocker, impatient, worker, thread


@pytest.mark.sqlite_only
def test_busy_database_waits_and_never_advances_the_offset_alone(
    db_path: Path,
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    last = xadd_event(rclient, "g", "container_exited")
    blocker, impatient, worker, thread = _start_behind_a_write_lock(db_path, make_worker)
    deadline = time.monotonic() + 10
    while worker.totals.busy_retries < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.totals.busy_retries >= 2
    assert offsets.load(SqliteSql(blocker, str(db_path)), "health_events") is None
    blocker.execute("ROLLBACK")
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert record_of(db, "g") == ("engine_unreachable", "exited")
    assert offsets.load(db.conn, "health_events") == last
    blocker.close()
    impatient.close()


@pytest.mark.sqlite_only
def test_a_stop_request_is_honoured_while_the_database_stays_locked(
    db_path: Path,
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "g", "container_exited")
    blocker, impatient, worker, thread = _start_behind_a_write_lock(
        db_path, make_worker, backoff_initial_s=5.0, backoff_max_s=10.0
    )
    deadline = time.monotonic() + 10
    while worker.totals.busy_retries < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    asked = time.monotonic()
    worker.request_stop()  # SIGTERM's first effect: the 5 s backoff must not be sat out
    thread.join(timeout=10)
    assert not thread.is_alive() and time.monotonic() - asked < 2.0
    # nothing half-done
    assert offsets.load(SqliteSql(blocker, str(db_path)), "health_events") is None
    blocker.execute("ROLLBACK")
    blocker.close()
    impatient.close()


def test_drain_on_an_empty_or_missing_stream_exits_at_once(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    missing = make_worker()
    missing.run()  # no stream at all
    assert missing.totals.entries == 0 and missing.totals.batches == 0
    xadd_event(rclient, "g", "probe_failed")
    rclient.xtrim("runtime:health_events", maxlen=0, approximate=False)
    assert rclient.exists("runtime:health_events") and rclient.xlen("runtime:health_events") == 0
    empty = make_worker()
    empty.run()  # a stream that exists and holds nothing
    assert empty.totals.entries == 0 and empty.totals.batches == 0


def test_stop_request_finishes_the_batch_in_hand(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    worker = make_worker(drain=False, block_ms=50)
    thread = threading.Thread(target=worker.run)
    thread.start()
    last = xadd_event(rclient, "g", "container_exited")
    deadline = time.monotonic() + 10
    while worker.totals.snapshots_published < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.request_stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert offsets.load(db.conn, "health_events") == last
    assert len(published(rclient)) == 1


def test_record_cache_sees_writes_from_other_connections(
    db_location: str, db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    from store import open_database

    add_games(db, ("g", Status.RUNNING))
    worker = make_worker(drain=False, block_ms=20)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        xadd_event(rclient, "g", "probe_failed")
        deadline = time.monotonic() + 10
        while worker.totals.applied < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        admin = open_database(db_location)  # another process's connection, in effect
        set_status(admin, "g", Status.RUNNING, Status.GENERATION_IN_PROGRESS, FIXED_NOW_MS)
        from store.admin import add_game

        add_game(admin, "late", Status.RUNNING, 0, FIXED_NOW_MS)
        admin.close()
        xadd_event(rclient, "g", "container_exited")  # CAS miss now: admin moved it
        xadd_event(rclient, "late", "container_exited")
        while worker.totals.applied < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        worker.request_stop()
        thread.join(timeout=10)
    assert record_of(db, "g") == ("generation_in_progress", "exited")
    assert record_of(db, "late") == ("engine_unreachable", "exited")
    assert worker.totals.rejected == 0


def test_failed_batch_leaves_no_trace_in_the_cache(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    worker = make_worker()
    xadd_event(rclient, "g", "probe_failed")
    worker.run()
    xadd_event(rclient, "g", "container_exited")
    faults.arm(FaultPoint.BEFORE_COMMIT)
    crashed = make_worker()
    crashed.cache = worker.cache  # the same process-wide view, as within one worker
    with pytest.raises(InjectedFault):
        crashed.run()
    assert record_of(db, "g") == ("running", "probe_failed")
    survivor = make_worker()
    survivor.cache = worker.cache
    survivor.run()
    assert record_of(db, "g") == ("engine_unreachable", "exited")
    assert [s["runtime_status"] for s in published(rclient)] == ["running", "engine_unreachable"]


@pytest.mark.sqlite_only
def test_checkpoints_run_off_the_loop_and_leave_an_empty_wal(
    db_path: Path, db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    import os

    add_games(db, *[(f"g{i}", Status.RUNNING) for i in range(200)])
    for i in range(600):
        xadd_event(
            rclient, f"g{i % 200}", "probe_failed" if (i // 200) % 2 else "container_started"
        )
    db.conn.execute("PRAGMA wal_autocheckpoint=777")  # the connection's own setting
    seen: list[tuple[int, bool]] = []

    def look(result: object, seconds: float) -> None:  # in the loop, after each batch
        setting = int(db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        names = {t.name for t in threading.enumerate()}
        seen.append((setting, "wal-checkpoint" in names))

    worker = make_worker(batch_size=50, observers=[look])
    worker.run()
    assert seen and set(seen) == {(0, True)}  # the loop never checkpoints; a thread does
    assert db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 777  # given back
    assert os.path.getsize(f"{db_path}-wal") == 0  # the final checkpoint truncated it
    assert len(published(rclient)) == 600


def test_published_entries_are_exactly_the_codec_encoding(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    from consumer.contract.codec import encode_snapshot

    add_games(db, ("g", Status.RUNNING))
    entry = xadd_event(rclient, "g", "container_disappeared")
    make_worker().run()
    [(_, fields)] = entries(rclient, "gm:lobby_events")
    expected = encode_snapshot(
        outbox.OutboxRow(entry, "g", "engine_unreachable", "disappeared", 0, FIXED_NOW_MS)
    )
    assert fields == expected


def test_the_loop_runs_with_fewer_gc_passes_and_restores_the_threshold() -> None:
    import gc

    from consumer.runtime.worker import GC_GEN0_THRESHOLD, fewer_gc_passes

    before = gc.get_threshold()
    raised = (max(GC_GEN0_THRESHOLD, before[0]), *before[1:])
    with pytest.raises(RuntimeError), fewer_gc_passes():
        assert gc.get_threshold() == raised
        raise RuntimeError("the loop failed")
    assert gc.get_threshold() == before
    first, second = fewer_gc_passes(), fewer_gc_passes()  # two workers, overlapping
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert gc.get_threshold() == raised  # the second one still runs
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before
