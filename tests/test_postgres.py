"""What only PostgreSQL has to face: other writers on the same rows, a server that goes
away, a role with minimal grants, and moving a SQLite store over.

The store, consumer, operator, lease and Hypothesis tests run on both backends (their
``pytest.mark.backends``); these are the cases only PostgreSQL has.
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status
from statemachine.table import ALLOWED_CHANGES
from store import Store, dead_letters, offsets, open_database, outbox
from store.admin import set_status
from store.records import insert_new
from tests import pg
from tests import pg_server as embedded_pg
from tests.conftest import FIXED_NOW_MS, add_games, published, seed_flips, xadd_event
from tests.processes import Consume, is_stopped, wait_for
from tests.processes import cli_in_process as cli

STREAM = "runtime:health_events"
LABEL = "health_events"
ALLOWED = {(a.value, b.value) for a, b in ALLOWED_CHANGES}

AUDIT_TRIGGER = """
CREATE TABLE status_audit (id bigserial PRIMARY KEY, game_id text, old text, new text);
CREATE FUNCTION audit_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO status_audit (game_id, old, new) VALUES (NEW.game_id, OLD.status, NEW.status);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER audit AFTER UPDATE ON runtime_records
    FOR EACH ROW EXECUTE FUNCTION audit_status();
"""
"""Every status change any writer commits, with the status it really replaced."""


@pytest.fixture
def pg_url() -> str:
    """A fresh schema on the session's server, over its Unix socket."""
    return pg.new_schema_url()


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Store]:
    database = open_database(pg_url, create=True)
    yield database
    database.close()


def _drain(url: str, redis_url: str) -> None:
    """One drain of the stream into ``url``, its store closed afterwards."""
    worker = _worker(url, redis_url)
    try:
        worker.run()
    finally:
        worker.db.close()


def _worker(url: str, redis_url: str, **overrides: object) -> Worker:
    options: dict[str, object] = {
        "redis_url": redis_url,
        "db_path": url,
        "drain": True,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
    }
    options.update(overrides)
    settings = ConsumerSettings.model_validate(options)
    return Worker(settings, open_database(url), clock=lambda: FIXED_NOW_MS)


def test_an_external_compare_and_swap_is_never_lost(
    pg_url: str, pg_db: Store, redis_url: str, rclient: redis.Redis
) -> None:
    """Turn generation holds a status with ``UPDATE ... WHERE status = ...`` while a drain
    runs: every committed change, by either writer, is an allowed one from the status it
    really replaced, so neither overwrote the other."""
    games = [f"g{i}" for i in range(20)]
    with pg_db.write() as sql:
        insert_new(sql, games, "running", 0)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(AUDIT_TRIGGER.encode())
    pipe = rclient.pipeline(transaction=False)
    for i in range(8000):
        kind = ("container_exited", "probe_recovered")[(i // len(games)) % 2]
        pipe.xadd(
            STREAM, {"game_id": games[i % len(games)], "event_type": kind, "occurred_at_ms": "1"}
        )
    pipe.execute()

    done = threading.Event()
    held: list[str] = []

    def turn_generation() -> None:
        rng = random.Random(7)
        with psycopg.connect(pg_url) as conn:
            while not done.is_set():
                game = rng.choice(games)
                with conn.transaction():
                    took = conn.execute(
                        "UPDATE runtime_records SET status = 'generation_in_progress'"
                        " WHERE game_id = %s AND status = 'running'",
                        [game],
                    ).rowcount
                    time.sleep(0.001)  # hold the row a moment, as a real flow would
                if took:
                    held.append(game)
                    with conn.transaction():
                        conn.execute(
                            "UPDATE runtime_records SET status = 'running'"
                            " WHERE game_id = %s AND status = 'generation_in_progress'",
                            [game],
                        )

    writer = threading.Thread(target=turn_generation)
    writer.start()
    worker = _worker(pg_url, redis_url, batch_size=100)
    try:
        worker.run()
    finally:
        done.set()
        writer.join(timeout=10)
        worker.db.close()
    changes = pg_db.conn.execute(
        "SELECT game_id, old, new FROM status_audit ORDER BY id"
    ).fetchall()
    assert held and worker.totals.entries == 8000
    wrong = [(g, old, new) for g, old, new in changes if (old, new) not in ALLOWED]
    assert not wrong, f"{len(wrong)} changes overwrote another writer's status: {wrong[:5]}"
    by_worker = {(old, new) for _, old, new in changes} & {
        ("running", "engine_unreachable"),
        ("engine_unreachable", "running"),
    }
    assert by_worker  # the drain did change statuses while the other writer ran
    history = pg_db.conn.execute("SELECT from_status, to_status FROM runtime_history").fetchall()
    assert all(a == b or (a, b) in ALLOWED for a, b in history)


def test_a_row_lock_past_the_lock_timeout_retries_the_whole_batch(
    pg_url: str, pg_db: Store, redis_url: str, rclient: redis.Redis
) -> None:
    add_games(pg_db, ("free", Status.RUNNING), ("held", Status.RUNNING))
    xadd_event(rclient, "free", "container_exited")
    last = xadd_event(rclient, "held", "container_exited")
    blocker = psycopg.connect(pg_url)
    blocker.execute("SELECT * FROM runtime_records WHERE game_id = 'held' FOR UPDATE")
    settings = ConsumerSettings(
        redis_url=redis_url, db_path=pg_url, drain=True, backoff_initial_s=0.01, backoff_max_s=0.05
    )
    worker = Worker(settings, open_database(pg_url, busy_timeout_s=0.1))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.totals.busy_retries >= 3, what="lock timeouts, retried")
        statuses = dict(pg_db.conn.execute("SELECT game_id, status FROM runtime_records"))
        assert statuses == {"free": "running", "held": "running"}  # nothing half-applied
        assert offsets.load(pg_db.conn, LABEL) == "0-0"  # placed on taking; no batch committed
    finally:
        blocker.rollback()
        blocker.close()
        thread.join(timeout=20)
        worker.db.close()
    assert not thread.is_alive()
    statuses = dict(pg_db.conn.execute("SELECT game_id, status FROM runtime_records"))
    assert statuses == {"free": "engine_unreachable", "held": "engine_unreachable"}
    assert offsets.load(pg_db.conn, LABEL) == last and offsets.entries_read(pg_db.conn, LABEL) == 2


@pytest.fixture
def own_postgres() -> Iterator[embedded_pg.EmbeddedPostgres]:
    """A server of this test's own, to stop, kill and restart."""
    server = embedded_pg.start()
    yield server
    server.stop()


def _outcome(url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], int | None]:
    """Records, history (without times) and entries read: what a drain leaves behind."""
    db = open_database(url)
    try:
        records = db.conn.execute(
            "SELECT game_id, status, engine_health, current_turn, last_emitted_summary"
            " FROM runtime_records ORDER BY game_id"
        ).fetchall()
        history = db.conn.execute(
            "SELECT game_id, entry_id, cause, from_status, to_status, engine_health"
            " FROM runtime_history ORDER BY id"
        ).fetchall()
        return (
            [tuple(r) for r in records],
            [tuple(h) for h in history],
            offsets.entries_read(db.conn, LABEL),
        )
    finally:
        db.close()


def test_postgres_down_at_start_and_killed_mid_drain_loses_and_repeats_nothing(
    own_postgres: embedded_pg.EmbeddedPostgres,
    redis_url: str,
    rclient: redis.Redis,
    tmp_path: Path,
) -> None:
    url = own_postgres.url()
    db = open_database(url, create=True)
    with db.write() as sql:
        insert_new(sql, (f"g{i}" for i in range(300)), "running", 0)
    db.close()
    pipe = rclient.pipeline(transaction=False)
    for i in range(20_000):
        kind = ("container_exited", "probe_recovered", "probe_failed")[(i // 300) % 3]
        game = f"g{i % 300}" if i % 250 else "ghost"
        pipe.xadd(STREAM, {"game_id": game, "event_type": kind, "occurred_at_ms": "1"})
    pipe.execute()
    own_postgres.stop_server()

    args = ["--drain", "--redis-url", redis_url, "--db", url, "--batch-size", "100"]
    worker = Consume(tmp_path / "pg.log", *args)
    wait_for(lambda: "retrying in" in worker.stderr(), what="waits for the server")
    own_postgres.start()

    def progress() -> int:
        try:
            with psycopg.connect(url, connect_timeout=2) as conn:
                row = conn.execute("SELECT entries_read FROM stream_offsets").fetchone()
        except psycopg.Error:
            return 0
        return 0 if row is None else int(row[0])

    wait_for(lambda: progress() >= 4000, what="draining")
    own_postgres.kill()  # the machine's database dies mid-batch
    time.sleep(0.5)
    own_postgres.start()
    assert worker.wait(timeout_s=60) == 0, worker.stderr()
    log = worker.stderr()
    assert "reconnecting in" in log and "Traceback" not in log and own_postgres.url() not in log

    reference = tmp_path / "reference.db"  # the same stream, drained without a fault
    lite = open_database(str(reference), create=True)
    with lite.write() as sql:
        insert_new(sql, (f"g{i}" for i in range(300)), "running", 0)
    lite.close()
    calm = _worker(str(reference), redis_url, lobby_stream="reference:lobby", batch_size=100)
    calm.run()
    calm.db.close()
    assert _outcome(url) == _outcome(str(reference))
    assert _outcome(url)[2] == 20_000
    faulted = {s["source_entry_id"] for s in published(rclient)}
    assert faulted == {s["source_entry_id"] for s in published(rclient, "reference:lobby")}


def test_a_wrong_password_is_one_line_and_never_shown(
    capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    server = pg.server()
    url = server.url(password="not-the-secret-4711")
    for argv in (
        ["runtime", "list", "--db", url],
        ["consume", "--drain", "--redis-url", redis_url, "--db", url],
    ):
        code, _, err = cli(capsys, *argv)
        assert code == 1 and err.count("\n") == 1, err
        assert "password authentication failed" in err and "not-the-secret-4711" not in err


def test_a_role_with_table_grants_runs_the_worker_and_migrate_needs_create(
    capsys: pytest.CaptureFixture[str], redis_url: str, rclient: redis.Redis
) -> None:
    server = pg.server()
    server.admin("CREATE ROLE hf_worker LOGIN PASSWORD 'worker-pw'")
    server.admin("CREATE SCHEMA app")
    code, _, err = cli(capsys, "migrate", "--db", server.socket_url("app"))
    assert code == 0, err
    server.admin("GRANT USAGE ON SCHEMA app TO hf_worker")
    server.admin("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA app TO hf_worker")
    worker_url = server.url("app", user="hf_worker", password="worker-pw")

    code, _, err = cli(capsys, "runtime", "add", "g", "--db", worker_url)
    assert code == 0, err
    xadd_event(rclient, "g", "container_exited")
    xadd_event(rclient, "ghost", "probe_failed")
    code, _, err = cli(capsys, "consume", "--drain", "--redis-url", redis_url, "--db", worker_url)
    assert code == 0, err
    code, out, err = cli(capsys, "runtime", "show", "g", "--db", worker_url)
    assert code == 0 and json.loads(out)["status"] == "engine_unreachable", err
    code, out, err = cli(
        capsys, "runtime", "set-status", "g", "--from", "engine_unreachable", "--to", "running",
        "--db", worker_url,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = cli(capsys, "consume", "--drain", "--redis-url", redis_url, "--db", worker_url)
    assert code == 0, err
    assert [s["runtime_status"] for s in published(rclient)] == ["engine_unreachable", "running"]
    replay = ["dead-letters", "replay", "--reason", "unknown_game", "--redis-url", redis_url]
    code, out, err = cli(capsys, *replay, "--db", worker_url)
    assert code == 0 and json.loads(out)["replayed"] == 1, err

    server.admin("CREATE SCHEMA app2")
    code, _, err = cli(
        capsys, "migrate", "--db", server.url("app2", user="hf_worker", password="worker-pw")
    )
    assert code == 1 and err.count("\n") == 1 and "no schema this role can use" in err, err
    server.admin("GRANT USAGE ON SCHEMA app2 TO hf_worker")
    code, _, err = cli(
        capsys, "migrate", "--db", server.url("app2", user="hf_worker", password="worker-pw")
    )
    assert code == 1 and err.count("\n") == 1 and "permission denied" in err, err
    server.admin("GRANT CREATE ON SCHEMA app2 TO hf_worker")
    code, _, err = cli(
        capsys, "migrate", "--db", server.url("app2", user="hf_worker", password="worker-pw")
    )
    assert code == 0, err


def test_migrate_from_sqlite_moves_everything_a_worker_needs(
    capsys: pytest.CaptureFixture[str],
    db_path: Path,
    pg_url: str,
    redis_url: str,
    rclient: redis.Redis,
) -> None:
    lite = open_database(db_path, create=True)
    add_games(lite, ("a", Status.RUNNING), ("b", Status.ENGINE_UNREACHABLE), ("c", Status.STARTING))
    for game, kind in [("a", "container_exited"), ("b", "probe_recovered"), ("ghost", "x")]:
        xadd_event(rclient, game, kind)
    xadd_event(rclient, "a", "probe_failed")
    _drain(str(db_path), redis_url)
    set_status(lite, "c", Status.STARTING, Status.RUNNING, FIXED_NOW_MS)  # queues a snapshot
    lite.close()
    source = str(db_path)

    code, _, err = cli(capsys, "migrate", "--from-sqlite", source, "--db", pg_url)
    assert code == 1 and "unpublished" in err and err.count("\n") == 1, err
    code, _, err = cli(capsys, "outbox", "flush", "--redis-url", redis_url, "--db", source)
    assert code == 0, err
    code, out, err = cli(capsys, "migrate", "--from-sqlite", source, "--db", pg_url)
    assert code == 0, err
    moved = json.loads(out)
    assert moved["runtime_records"] == 3 and moved["dead_letters"] == 1 and moved["outbox_seq"] > 0

    def shown(*argv: str, db: str) -> Any:
        code, out, err = cli(capsys, *argv, "--json", "--db", db)
        assert code == 0, err
        return json.loads(out)

    assert shown("runtime", "list", db=pg_url) == shown("runtime", "list", db=source)
    assert shown("dead-letters", "list", db=pg_url) == shown("dead-letters", "list", db=source)
    for game in ("a", "b", "c"):
        assert shown("runtime", "history", game, db=pg_url) == shown(
            "runtime", "history", game, db=source
        )
    [pg_offset] = shown("offsets", "show", db=pg_url)
    [lite_offset] = shown("offsets", "show", db=source)
    for key in ("label", "entry_id", "entries_read"):
        assert pg_offset[key] == lite_offset[key]

    code, _, err = cli(capsys, "migrate", "--from-sqlite", source, "--db", pg_url)
    assert code == 1 and "already holds 3 runtime records" in err, err

    after = open_database(pg_url)
    try:
        set_status(after, "c", Status.RUNNING, Status.STOPPED, FIXED_NOW_MS)
        [(seq, row)] = outbox.peek(after.conn, 10)
    finally:
        after.close()
    assert seq == moved["outbox_seq"] + 1 and row.source_entry_id == f"admin-{seq}"
    entry = xadd_event(rclient, "a", "probe_recovered")
    code, _, err = cli(capsys, "consume", "--drain", "--redis-url", redis_url, "--db", pg_url)
    assert code == 0, err
    [offset] = shown("offsets", "show", db=pg_url)
    assert offset["entry_id"] == entry
    assert offset["entries_read"] == lite_offset["entries_read"] + 1


def test_an_admin_snapshot_waits_for_an_open_batch_so_seqs_follow_commits(
    pg_url: str, pg_db: Store
) -> None:
    """The relay publishes in seq order and deletes up to a seq: a row with a lower seq that
    commits later would be skipped and deleted unpublished. So outbox writers take turns."""
    add_games(pg_db, ("g", Status.RUNNING))
    batch_open = threading.Event()
    release = threading.Event()

    def batch() -> None:
        with pg_db.write() as sql:
            outbox.enqueue(sql, [outbox.OutboxRow("1-0", "g", "running", "", 0, 1)])
            batch_open.set()
            release.wait(10)

    first = threading.Thread(target=batch)
    first.start()
    batch_open.wait(10)
    admin = open_database(pg_url)
    second = threading.Thread(
        target=set_status, args=(admin, "g", Status.RUNNING, Status.STOPPED, FIXED_NOW_MS)
    )
    second.start()
    second.join(timeout=0.5)
    waited = second.is_alive()  # the admin change waits for the open batch's outbox
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    admin.close()
    assert waited
    rows = outbox.peek(pg_db.conn, 10)
    assert [row.source_entry_id for _, row in rows] == ["1-0", f"admin-{rows[1][0]}"]


def test_a_standby_never_takes_a_lease_renewed_after_it_looked(pg_url: str, pg_db: Store) -> None:
    """READ COMMITTED: the standby reads the expired row, the holder renews it meanwhile;
    the standby's takeover must then match nothing (a compare-and-swap on the expiry)."""
    from store import partitions

    with pg_db.write() as sql:
        partitions.ensure(sql, LABEL)
    [free] = partitions.read_leases(pg_db.conn, LABEL).values()
    with pg_db.write() as sql:
        held = partitions.try_take(sql, free, "h:1:a", "node-a", 1000, 500)
    assert held is not None
    holder = open_database(pg_url)
    outcome: list[partitions.PartitionLease | None] = []
    try:
        with holder.write() as sql:  # row locked, not committed
            assert partitions.renew(sql, LABEL, "h:1:a", {0: held.epoch}, 1400, 500)

            def standby() -> None:
                with pg_db.write() as conn:  # it read the committed, expired row (1500 < 1600)
                    outcome.append(partitions.try_take(conn, held, "h:2:b", "node-b", 1600, 500))

            thread = threading.Thread(target=standby)
            thread.start()
            time.sleep(0.3)  # the standby is waiting for the row
        thread.join(timeout=10)
    finally:
        holder.close()
    assert outcome == [None]
    row = partitions.read_leases(pg_db.conn, LABEL)[0]
    assert row.holder == "h:1:a" and row.expires_at_ms == 1900


def test_a_replay_skips_the_rows_another_replay_is_choosing(
    pg_url: str, pg_db: Store, redis_url: str, rclient: redis.Redis
) -> None:
    """Two replays at once: the second takes the next rows instead of waiting for (or, worse,
    re-claiming) the rows the first is claiming."""
    from consumer.operations.dead_letters import replay_dead_letters

    for _ in range(150):
        xadd_event(rclient, "late", "probe_failed")
    _drain(pg_url, redis_url)
    first = psycopg.connect(pg_url)  # a replay in the middle of claiming the oldest 50
    locked = first.execute("SELECT id FROM dead_letters ORDER BY id LIMIT 50 FOR UPDATE")
    taken = {row[0] for row in locked}
    started = time.monotonic()
    sent, _ = replay_dead_letters(pg_db, rclient, STREAM, reason="unknown_game", ids=[], limit=100)
    assert sent == 100 and time.monotonic() - started < 2.0  # did not wait for the 50
    first.rollback()
    first.close()
    left = {int(str(row["id"])) for row in dead_letters.list_recent(pg_db.conn)}
    assert left == taken


def test_a_worker_frozen_inside_its_batch_is_cut_off_and_fenced(
    pg_url: str, pg_db: Store, redis_url: str, rclient: redis.Redis, tmp_path: Path
) -> None:
    """Frozen mid-transaction (SIGSTOP before the commit) it holds row locks on the lease
    and the records; the server ends its session (idle in transaction), the standby takes
    over after the TTL, and the frozen worker, resumed, writes nothing more."""
    with pg_db.write() as sql:
        insert_new(sql, (f"g{i}" for i in range(50)), "running", 0)
    last = seed_flips(rclient, 50, 2000)
    args = ["--redis-url", redis_url, "--db", pg_url, "--lease-ttl", "1", "--batch-size", "50"]
    frozen = Consume(
        tmp_path / "frozen.log",
        *args,
        env={"HEALTHFSM_INJECT_FAULT": "before_commit:3:stop", "HEALTHFSM_TEST_HOOKS": "1"},
    )
    standby = None
    try:
        wait_for(lambda: is_stopped(frozen.pid), what="frozen inside its third batch")
        assert offsets.entries_read(pg_db.conn, LABEL) == 100
        standby = Consume(tmp_path / "standby.log", *args)
        wait_for(lambda: offsets.load(pg_db.conn, LABEL) == last, what="standby drains")
        assert "took over the lease" in standby.stderr()
        wait_for(lambda: outbox.pending(pg_db.conn) == 0, what="standby publishes")
        lobby = rclient.xlen("gm:lobby_events")
        frozen.signal(signal.SIGCONT)
        wait_for(lambda: "standing by" in frozen.stderr().split("took")[-1], what="fenced")
        time.sleep(0.3)
        assert rclient.xlen("gm:lobby_events") == lobby
        assert offsets.entries_read(pg_db.conn, LABEL) == 2000  # each entry counted once
    finally:
        frozen.stop()
        if standby is not None:
            assert standby.stop() == 0
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert len(sources) == len(set(sources))


def test_sigterm_while_the_server_is_unreachable_exits_0(redis_url: str, tmp_path: Path) -> None:
    from consumer.devtools.embedded import free_port

    url = f"postgresql://postgres:secret-xyz@127.0.0.1:{free_port()}/postgres"
    waiting = Consume(tmp_path / "w.log", "--redis-url", redis_url, "--db", url)
    try:
        wait_for(lambda: "retrying in" in waiting.stderr(), what="waits for the server")
        waiting.signal(signal.SIGTERM)
        assert waiting.wait() == 0, waiting.stderr()
    finally:
        waiting.stop()
    log = waiting.stderr()
    assert "stopped while waiting for the database" in log and "secret-xyz" not in log
