"""The stream under the offset: reset (ids behind the offset, a recreated or lost stream)
and gaps (unread entries trimmed), found whenever they happen and never skipped silently.

Redis 6.2 and 7 differ: only 7 reports ``entries-added``, which shows a recreated stream
and sizes a gap. Each test asserts what the server it finds can give.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from consumer.errors import StreamReset
from consumer.runtime.batch import BatchResult
from statemachine import Status
from store import offsets, records
from store.backend import Store
from tests.conftest import WorkerFactory, add_games, published, xadd_event
from tests.processes import run_cli

STREAM = "runtime:health_events"
LABEL = "health_events"


def redis_major(client: redis.Redis) -> int:
    return int(str(client.info("server")["redis_version"]).split(".")[0])


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def _events(
    client: redis.Redis, n: int, game: str = "g", ids: list[str] | None = None
) -> list[str]:
    made = []
    for i in range(n):
        kind = ("container_started", "probe_failed")[i % 2]
        fields = {"game_id": game, "event_type": kind, "occurred_at_ms": "1"}
        raw = client.xadd(STREAM, fields, id=ids[i] if ids else "*")  # type: ignore[arg-type]
        made.append(raw.decode() if isinstance(raw, bytes) else str(raw))
    return made


def test_a_stream_behind_the_offset_stops_the_worker_with_the_remedy(
    db: Store, db_path: Path, redis_url: str, rclient: redis.Redis
) -> None:
    """Case 2: Redis came back without its data and new ids are lower than the offset."""
    add_games(db, ("g", Status.RUNNING))
    read = _events(rclient, 3, ids=["5000-0", "5000-1", "5001-0"])
    args = ["--redis-url", redis_url, "--db", str(db_path)]
    assert run_cli("consume", "--drain", *args).returncode == 0
    rclient.delete(STREAM)
    _events(rclient, 2, ids=["100-0", "200-0"])  # a clock behind, or a restored old snapshot
    drained = run_cli("consume", "--drain", *args)
    assert drained.returncode == 1, drained.stderr
    last_line = drained.stderr.strip().splitlines()[-1]
    assert "200-0" in last_line and read[-1] in last_line
    assert f"healthfsm offsets set {LABEL} 0-0 --yes" in last_line
    assert "Traceback" not in drained.stderr
    assert "ERROR" in drained.stderr  # the reset is logged as an error too
    check = run_cli("check", *args)
    assert check.returncode == 1 and "reset" in check.stderr and "offsets set" in check.stderr
    assert check.stderr.count("\n") == 1
    assert offsets.load(db.conn, LABEL) == read[-1]  # nothing moved


def test_rewind_reads_a_reset_stream_from_its_start(
    db: Store,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    _events(rclient, 2, ids=["5000-0", "5000-1"])
    make_worker().run()
    rclient.delete(STREAM)
    new = _events(rclient, 1, ids=["100-0"])
    xadd_event(rclient, "g", "container_exited", entry_id="200-0")
    caplog.set_level(logging.INFO)
    worker = make_worker(on_stream_reset="rewind")
    worker.run()
    assert any("was reset" in e and "5000-1" in e for e in _errors(caplog))
    assert worker.metrics.stream_resets._value.get() == 1
    assert records.get(db.conn, "g").state is Status.ENGINE_UNREACHABLE  # the new entries applied
    assert new[0] in [s["source_entry_id"] for s in published(rclient)]
    assert offsets.entries_read(db.conn, LABEL) == 2  # counted afresh from the rewind


def test_a_missing_stream_under_a_stored_offset_is_a_reset(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING))
    _events(rclient, 2)
    make_worker().run()
    rclient.delete(STREAM)  # Redis restarted without persistence
    with pytest.raises(StreamReset, match="does not exist"):
        make_worker().run()


def test_a_recreated_stream_is_a_reset_where_redis_can_tell(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    """Deleted and written again with higher ids: Redis 7 counts fewer entries-added than
    this label has read; Redis 6.2 has no such count, and the worker reads the new entries."""
    add_games(db, ("g", Status.RUNNING))
    _events(rclient, 5)
    make_worker().run()
    rclient.delete(STREAM)
    fresh = _events(rclient, 2)
    if redis_major(rclient) >= 7:
        with pytest.raises(StreamReset, match="recreated: 2 entries were ever added"):
            make_worker().run()
        assert offsets.entries_read(db.conn, LABEL) == 5
    else:
        make_worker().run()
        assert offsets.load(db.conn, LABEL) == fresh[-1]


def test_a_gap_is_reported_by_the_batch_that_crosses_it(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Case 3b: trimmed under a running worker that lags; reported before reading on."""
    add_games(db, ("g", Status.RUNNING))
    ids = _events(rclient, 100)
    worker = make_worker(batch_size=10)
    trimmed: list[str] = []

    def trim_once(result: BatchResult, seconds: float) -> None:
        if not trimmed and result.last_entry_id == ids[9]:
            rclient.xtrim(STREAM, minid=ids[39], approximate=False)  # 29 unread entries go
            trimmed.append(result.last_entry_id)

    worker.status.observers.append(trim_once)
    caplog.set_level(logging.INFO)
    worker.run()
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    # the batch after ids[19] (already read ahead before the trim) crosses the gap
    assert f"stored offset {ids[19]}" in errors[0] and ids[39] in errors[0]
    assert worker.metrics.gaps._value.get() == 1
    if redis_major(rclient) >= 7:
        assert "about 19 entries" in errors[0]
        assert worker.metrics.gap_entries._value.get() == 19
    sources = {s["source_entry_id"] for s in published(rclient)}
    assert set(ids[20:39]).isdisjoint(sources) and ids[40] in sources  # ids[39] is debounced
    assert offsets.load(db.conn, LABEL) == ids[-1]


def test_unread_entries_trimmed_to_an_empty_stream_are_a_gap(
    db: Store, db_path: Path, redis_url: str, rclient: redis.Redis
) -> None:
    """Case 3a: XTRIM MAXLEN 0 with 500 unread entries while the worker was stopped."""
    add_games(db, ("g", Status.RUNNING))
    _events(rclient, 3)
    args = ["--redis-url", redis_url, "--db", str(db_path)]
    assert run_cli("consume", "--drain", *args).returncode == 0
    unread = _events(rclient, 500)
    rclient.xtrim(STREAM, maxlen=0, approximate=False)
    check = run_cli("check", *args)
    assert check.returncode == 1 and "nothing left to read" in check.stderr, check.stderr
    drained = run_cli("consume", "--drain", *args)
    assert drained.returncode == 0, drained.stderr
    errors = [line for line in drained.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "trimmed past the stored offset" in errors[0], drained.stderr
    if redis_major(rclient) >= 7:
        assert "about 500 entries" in errors[0]
    assert offsets.load(db.conn, LABEL) == unread[-1]  # accounted: nothing left behind it
    assert run_cli("check", *args).returncode == 0
    again = run_cli("consume", "--drain", *args)
    assert again.returncode == 0 and "ERROR" not in again.stderr  # reported once


def test_check_fails_while_the_offset_is_behind_the_first_entry(
    db: Store, db_path: Path, redis_url: str, rclient: redis.Redis
) -> None:
    add_games(db, ("g", Status.RUNNING))
    _events(rclient, 2)
    args = ["--redis-url", redis_url, "--db", str(db_path)]
    assert run_cli("consume", "--drain", *args).returncode == 0
    fresh = _events(rclient, 5)
    rclient.xtrim(STREAM, minid=fresh[2], approximate=False)
    check = run_cli("check", *args)
    assert check.returncode == 1 and f"older than the first entry {fresh[2]}" in check.stderr
