"""What ``healthfsm consume`` writes to stderr at the default level, and that its log never
stalls it: real CLI processes, a real Redis, real SQLite files, real (unread) pipes.

The claims held here: nothing is logged per event above DEBUG, by any logger; rejections
are summed up once per batch and reason; a stderr that nobody reads neither stops the loop
nor SIGTERM; ``--drain`` gives up on an unreachable Redis or store in bounded time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer import settings
from consumer.contract import constants as c
from consumer.devtools.embedded import free_port
from consumer.runtime.rejection_log import RejectionLog
from statemachine import Status
from store import dead_letters, offsets, open_database, outbox, partitions
from store.backend import Store
from tests.conftest import add_games
from tests.processes import HEALTHFSM, run_cli, wait_for
from tests.streams import newest_id, oldest_id

FIXED_LINES = 15
"""What a drain may write at the default level whatever its size: start, lease, progress,
the summary line. A bound that grew with the events would hide a per-event line."""


def seed_status_changes(client: redis.Redis, games: int, count: int) -> str:
    """``count`` events over ``g0..``, every one a status change from ``running``: rounds
    of ``container_exited`` and ``probe_recovered``. Returns the last id."""
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        kind = ("container_exited", "probe_recovered")[(i // games) % 2]
        pipe.xadd(
            c.HEALTH_STREAM, {"game_id": f"g{i % games}", "event_type": kind, "occurred_at_ms": "1"}
        )
        if i % 10_000 == 9_999:
            pipe.execute()
    pipe.execute()
    return newest_id(client, c.HEALTH_STREAM)


def register(location: str, games: int) -> None:
    db = open_database(location, create=True)
    try:
        add_games(db, *((f"g{i}", Status.RUNNING) for i in range(games)))
    finally:
        db.close()


def drain(tmp_path: Path, redis_url: str, location: str, *extra: str) -> tuple[int, list[str]]:
    """``consume --drain`` with stderr to a file; (exit code, stderr lines)."""
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        code = subprocess.run(
            [*HEALTHFSM, "consume", "--drain", "--redis-url", redis_url, "--db", location, *extra],
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=300,
        ).returncode
    return code, log.read_text().splitlines()


def test_a_drain_of_status_changes_writes_a_fixed_number_of_lines(
    rclient: redis.Redis, redis_url: str, db_path: Path, tmp_path: Path
) -> None:
    register(str(db_path), 1000)
    seed_status_changes(rclient, 1000, 20_000)
    code, lines = drain(tmp_path, redis_url, str(db_path))
    assert code == 0, lines[-5:]
    assert rclient.xlen(c.LOBBY_STREAM) == 20_000  # every event did change a status
    assert len(lines) <= FIXED_LINES, "\n".join(lines[:20])
    assert not [line for line in lines if "transitions" in line]


def test_the_stop_line_counts_this_workers_snapshots_apart_from_what_it_found(
    rclient: redis.Redis, redis_url: str, db_path: Path, tmp_path: Path
) -> None:
    """Rows another label's run left in the shared outbox are published too, but the stop
    line does not count them as this run's; and one entry is ``1 entry``."""
    register(str(db_path), 1)
    db = open_database(str(db_path))
    with db.write() as conn:
        outbox.enqueue(
            conn, [outbox.OutboxRow(f"{i}-0", "g0", "running", "", 0, 1) for i in range(1, 6)]
        )
    db.close()
    seed_status_changes(rclient, 1, 1)
    code, lines = drain(tmp_path, redis_url, str(db_path))
    assert code == 0, lines[-5:]
    [stop] = [line for line in lines if "stopped at" in line]
    assert stop.endswith(
        ": 1 entry, 1 applied, 0 rejected, 1 snapshot published, and 5 more found in the outbox"
    ), stop
    assert rclient.xlen(c.LOBBY_STREAM) == 6


def test_debug_still_shows_the_library_s_per_state_lines(
    rclient: redis.Redis, redis_url: str, db_path: Path, tmp_path: Path
) -> None:
    register(str(db_path), 1)
    seed_status_changes(rclient, 1, 2)
    code, lines = drain(tmp_path, redis_url, str(db_path), "--log-level", "DEBUG")
    assert code == 0, lines[-5:]
    assert len([line for line in lines if " transitions." in line]) >= 4


def test_rejections_are_one_warning_per_reason_a_minute_and_the_rest_at_stop(
    rclient: redis.Redis, redis_url: str, db_path: Path, tmp_path: Path
) -> None:
    """A new store pointed at a stream with history: every entry is an unknown game. The
    first batch's rejections are said at once, the other three batches' (well within the
    minute) together when --drain stops: every reason is reported before the exit."""
    register(str(db_path), 0)
    seed_status_changes(rclient, 20_000, 20_000)
    first = oldest_id(rclient, c.HEALTH_STREAM)
    code, lines = drain(tmp_path, redis_url, str(db_path), "--batch-size", "5000")
    assert code == 0, lines[-5:]
    warnings = [line for line in lines if " WARNING " in line]
    assert len(warnings) == 2, "\n".join(lines[:20])  # 20,000 entries in 4 batches
    assert f"5000 entries kept as dead letters (unknown_game, {first} .." in warnings[0]
    assert "15000 entries kept as dead letters (unknown_game, " in warnings[1]
    assert lines.index(warnings[1]) < next(i for i, x in enumerate(lines) if "stopped at" in x)
    assert len(lines) <= FIXED_LINES + 2
    db = open_database(str(db_path), read_only=True)
    try:
        kept = db.conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    finally:
        db.close()
    assert kept == dead_letters.DEAD_LETTER_LIMIT  # the documented bound: the newest stay


@contextlib.contextmanager
def full_pipe() -> Iterator[int]:
    """The write end of a pipe that is already full and that nobody reads: the next write
    to it blocks until the test closes the read end."""
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"x" * 65536)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags)
    try:
        yield write_end
    finally:
        os.close(write_end)
        os.close(read_end)


def committed_offset(location: str) -> str | None:
    db = open_database(location, read_only=True)
    try:
        return offsets.load(db.conn, c.OFFSET_LABEL)
    finally:
        db.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def lease_released(location: str) -> bool:
    db: Store = open_database(location, read_only=True)
    try:
        held = partitions.read_leases(db.conn, c.OFFSET_LABEL).get(0)
        return held is not None and held.expires_at_ms == 0
    finally:
        db.close()


@pytest.mark.parametrize(
    ("level", "events"), [("INFO", 100_000), ("DEBUG", 20_000)], ids=["default", "debug"]
)
def test_a_stderr_nobody_reads_stalls_neither_the_loop_nor_sigterm(
    rclient: redis.Redis, redis_url: str, db_path: Path, level: str, events: int
) -> None:
    """The worker's first log line already meets a full pipe. It drains anyway, counts what
    it had to drop (at DEBUG, a line per status change), and SIGTERM still stops it: the
    batch in hand commits, the outbox is published, the lease is released, exit 0."""
    register(str(db_path), 1000)
    last = seed_status_changes(rclient, 1000, events)
    port = free_port()
    with full_pipe() as stderr:
        process = subprocess.Popen(
            [
                *HEALTHFSM,
                *("consume", "--redis-url", redis_url, "--db", str(db_path)),
                *("--log-level", level, "--metrics-port", str(port), "--block-ms", "200"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(lambda: committed_offset(str(db_path)) == last, 120, "drained")
            wait_for(lambda: rclient.xlen(c.LOBBY_STREAM) == events, 30, "all published")
            dropped = metric(scrape(port), "healthfsm_log_records_dropped_total")
            assert dropped > 0 if level == "DEBUG" else dropped == 0
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=15)
            took = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert code == 0
    assert took < 5, f"SIGTERM took {took:.1f}s"  # the batch in hand, 1.5 s for the log
    assert lease_released(str(db_path))


def test_drain_gives_up_on_a_closed_redis_port(db_path: Path) -> None:
    register(str(db_path), 1)
    started = time.monotonic()
    done = run_cli(
        "consume",
        "--drain",
        "--redis-url",
        f"redis://127.0.0.1:{free_port()}/0",
        "--db",
        str(db_path),
        "--give-up-after",
        "2",
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("healthfsm: error: redis stayed unreachable for ")
    assert "--drain gave up after --give-up-after 2" in last
    assert 2 <= took < 15, f"took {took:.1f}s"
    # each retry is one WARNING: no lease is taken and given up again while Redis is away
    assert "holding the lease" not in done.stderr and "released" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == len(done.stderr.strip().splitlines()) - 1, done.stderr


def test_drain_gives_up_on_an_unreachable_store() -> None:
    started = time.monotonic()
    done = run_cli(
        "consume",
        "--drain",
        "--db",
        f"postgresql://healthfsm@127.0.0.1:{free_port()}/x",
        "--give-up-after",
        "1.5",
    )
    took = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert "the store stayed unreachable for " in done.stderr.strip().splitlines()[-1]
    assert 1.5 <= took < 15, f"took {took:.1f}s"


def test_drain_waits_the_documented_default() -> None:
    done = run_cli("consume", "--help")
    assert (
        f"{settings.default('give_up_after_s'):g}" in done.stdout.split("--give-up-after")[1][:400]
    )
    assert settings.default("give_up_after_s") == 30.0  # docs/operations.md and the README say 30 s


def test_a_trickle_of_rejections_is_one_warning_per_reason_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One bad entry a second for three minutes (and one of another reason every other
    second), each in a batch of its own as a caught-up worker applies them: a line a
    minute per reason, each with the count since the last, on a virtual clock."""
    now = [0.0]
    rejections = RejectionLog(clock=lambda: now[0])
    caplog.set_level(logging.WARNING)
    for second in range(180):
        now[0] = float(second)
        batch = [("unknown_game", f"{second}-0")]
        if second % 2 == 0:
            batch.append(("malformed", f"{second}-1"))
        rejections.rejected(batch)
        if second % 10 == 0:
            rejections.say_due()  # the progress tick
    rejections.say_all()  # the stop
    said = [(r.reason, r.count) for r in caplog.records if r.levelname == "WARNING"]  # type: ignore[attr-defined]
    assert [n for reason, n in said if reason == "unknown_game"] == [1, 60, 60, 59]
    assert [n for reason, n in said if reason == "malformed"] == [1, 30, 30, 29]
