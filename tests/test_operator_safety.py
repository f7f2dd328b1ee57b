"""Operator commands that cannot lose or repeat, and a database never created or changed by
mistake: each case of the issue "Nothing lost, nothing repeated", run as an operator would."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import redis

from consumer.devtools import embedded
from consumer.runtime.relay import OutboxRelay
from statemachine import Status
from store import dead_letters, offsets, outbox, records
from store.backend import Store
from tests import old_stores
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, published, xadd_event
from tests.processes import HEALTHFSM, run_cli, wait_for
from tests.processes import cli_in_process as cli
from tests.streams import entries

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"
LOBBY = "gm:lobby_events"
LABEL = "health_events"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- case 4: dead-letter replay ------------------------------------------------------------


def _dead_letters_for(rclient: redis.Redis, make_worker: WorkerFactory, kinds: list[str]) -> None:
    for kind in kinds:
        xadd_event(rclient, "late", kind)
    make_worker().run()


def _replayed_kinds(rclient: redis.Redis, after: str) -> list[str]:
    return [f[b"event_type"].decode() for _, f in entries(rclient, STREAM, min=f"({after}")]


def test_replay_sends_the_oldest_rows_first_whatever_the_limit(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    kinds = ["container_exited", "probe_recovered", "container_oom", "probe_recovered"]
    _dead_letters_for(rclient, make_worker, kinds)
    add_games(db, ("late", Status.RUNNING))
    mark = offsets.load(db.conn, LABEL) or "0-0"
    args = ["--reason", "unknown_game", "--redis-url", redis_url, "--db", db_location]
    for _ in range(2):
        code, out, _ = cli(capsys, "dead-letters", "replay", "--limit", "2", *args)
        assert code == 0 and json.loads(out)["replayed"] == 2
    assert _replayed_kinds(rclient, mark) == kinds  # in the order they first arrived
    make_worker().run()
    record = records.get(db.conn, "late")
    assert (record.state, record.engine_health) == (Status.RUNNING, "healthy")


def test_concurrent_replays_never_send_a_row_twice(
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    _dead_letters_for(rclient, make_worker, ["probe_failed"] * 300)
    mark = offsets.load(db.conn, LABEL) or "0-0"
    argv = [*HEALTHFSM, "dead-letters", "replay", "--reason", "unknown_game", "--limit", "100"]
    argv += ["--redis-url", redis_url, "--db", db_location]
    runs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [json.loads(run.communicate(timeout=60)[0]) for run in runs]
    assert sum(o["replayed"] for o in outputs) == 300
    assert len(entries(rclient, STREAM, min=f"({mark}")) == 300
    assert dead_letters.list_recent(db.conn) == []


def test_a_row_claimed_by_a_crashed_replay_is_listed_and_sent_again_by_id(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    _dead_letters_for(rclient, make_worker, ["probe_failed", "container_exited"])
    first, second = dead_letters.list_recent(db.conn)[::-1]
    crashed = f"{__import__('socket').gethostname()}:{2**22 + 4321}:dead"  # no such pid
    with db.write() as conn:
        dead_letters.claim(conn, [int(str(first["id"]))], crashed, FIXED_NOW_MS)
    code, out, _ = cli(capsys, "dead-letters", "list", "--json", "--db", db_location)
    listed = {r["id"]: r["claimed_by"] for r in json.loads(out)}
    assert listed == {first["id"]: crashed, second["id"]: None}
    code, out, _ = cli(capsys, "dead-letters", "list", "--db", db_location)
    assert code == 0 and "claimed" in out
    args = ["--redis-url", redis_url, "--db", db_location]
    code, out, _ = cli(capsys, "dead-letters", "replay", "--reason", "unknown_game", *args)
    assert json.loads(out)["replayed"] == 1  # the claimed row is not taken by --reason
    code, out, _ = cli(capsys, "dead-letters", "replay", "--id", str(first["id"]), *args)
    assert code == 0 and json.loads(out)["replayed"] == 1  # its claimer is gone: sent again
    assert dead_letters.list_recent(db.conn) == []


def test_replay_by_id_skips_a_row_another_live_replay_claimed(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    _dead_letters_for(rclient, make_worker, ["probe_failed"])
    [row] = dead_letters.list_recent(db.conn)
    alive = f"{__import__('socket').gethostname()}:1:live"  # pid 1 runs
    with db.write() as conn:
        dead_letters.claim(conn, [int(str(row["id"]))], alive, 2**62)
    _, out, _ = cli(
        capsys,
        "dead-letters",
        "replay",
        "--id",
        str(row["id"]),
        "--redis-url",
        redis_url,
        "--db",
        db_location,
    )
    result = json.loads(out)
    assert result["replayed"] == 0 and "another replay" in result["skipped"][0]


def test_replay_by_id_says_why_an_id_was_not_sent(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    """An id no dead letter has (replayed already, say), or one of another reason than
    ``--reason``, is named in ``skipped`` with why: never silently left out."""
    _dead_letters_for(rclient, make_worker, ["probe_failed"])
    [row] = dead_letters.list_recent(db.conn)
    where = ["--redis-url", redis_url, "--db", db_location]
    code, out, err = cli(capsys, "dead-letters", "replay", "--id", "999", *where)
    assert code == 0, err
    result = json.loads(out)
    assert result["replayed"] == 0 and result["skipped"] == [
        "id 999 (no dead letter has it: replayed already, or never kept)"
    ]
    args = ["--id", str(row["id"]), "--reason", "malformed", *where]
    code, out, err = cli(capsys, "dead-letters", "replay", *args)
    assert code == 0, err
    assert json.loads(out)["skipped"] == [
        f"id {row['id']} (its reason is unknown_game, not malformed)"
    ]


# -- case 9: a pipelined publish that Redis refuses part-way -------------------------------


def test_rows_redis_accepted_before_a_refusal_are_not_published_again(
    db: Store,
) -> None:
    with embedded.running("--maxmemory-policy", "noeviction") as server:
        client = redis.Redis.from_url(server.url)
        rows = [
            outbox.OutboxRow(f"{i + 1}-0", f"g{i}", "running", "x" * 200, i, FIXED_NOW_MS)
            for i in range(3000)
        ]
        with db.write() as conn:
            outbox.enqueue(conn, rows)
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + 300_000)  # room for some of the XADDs, not all
        # Redis checks a script's memory before its first append only, so it refuses whole
        # chunks: small ones make room for some before the first refusal.
        relay = OutboxRelay(db, client, LOBBY, chunk=100)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            relay.publish()
        accepted = client.xlen(LOBBY)
        assert 0 < accepted < 3000
        assert outbox.pending(db.conn) == 3000 - accepted  # exactly the refused rows stay
        client.config_set("maxmemory", 0)
        relay.publish()
        sources = [f[b"source_entry_id"].decode() for _, f in entries(client, LOBBY)]
        assert sorted(sources) == sorted(row.source_entry_id for row in rows)  # once each
        relay.close()
        client.close()


# -- case 9: admin changes reach Lobby ------------------------------------------------------


def test_admin_status_changes_reach_lobby_through_the_running_worker(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING), ("h", Status.RUNNING))
    worker = make_worker(drain=False, block_ms=50)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        first = xadd_event(rclient, "h", "probe_failed")
        wait_for(lambda: len(published(rclient)) == 1, what="worker active")
        args = ["--db", db_location]
        code, _, _ = cli(
            capsys,
            "runtime",
            "set-status",
            "g",
            "--from",
            "running",
            "--to",
            "generation_in_progress",
            *args,
        )
        assert code == 0
        wait_for(lambda: len(published(rclient)) == 2, what="idle worker publishes it")
        # the next change lands between two batches of the busy worker: still in order
        cli(
            capsys,
            "runtime",
            "set-status",
            "g",
            "--from",
            "generation_in_progress",
            "--to",
            "running",
            *args,
        )
        last = xadd_event(rclient, "h", "container_exited")
        wait_for(lambda: len(published(rclient)) == 4, what="both published")
    finally:
        worker.request_stop()
        thread.join(timeout=10)
    shots = published(rclient)
    assert shots[0]["source_entry_id"] == first and shots[3]["source_entry_id"] == last
    admin = shots[1:3]
    assert [s["runtime_status"] for s in admin] == ["generation_in_progress", "running"]
    assert all(s["source_entry_id"].startswith("admin-") for s in admin)
    assert len({s["source_entry_id"] for s in shots}) == 4
    assert all(s["event_type"] == "runtime_snapshot_update" and s["game_id"] == "g" for s in admin)
    history = db.conn.execute(
        "SELECT entry_id FROM runtime_history WHERE cause = 'admin' ORDER BY id"
    ).fetchall()
    assert [h[0] for h in history] == [s["source_entry_id"] for s in admin]


# -- case 6: offsets set and new labels -----------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["99999999999999999999-0", "1-", "1-99999999999999999999", "\u0663-0", "17", "-1-0", ""]
)
def test_offsets_set_accepts_only_ids_redis_accepts(
    capsys: pytest.CaptureFixture[str], db_location: str, db: Store, bad: str
) -> None:
    code, _, err = cli(capsys, "offsets", "set", LABEL, bad, "--yes", "--db", db_location)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert offsets.load(db.conn, LABEL) is None


def test_offsets_set_edges(capsys: pytest.CaptureFixture[str], db_location: str, db: Store) -> None:
    args = ["--yes", "--db", db_location]
    code, _, err = cli(capsys, "offsets", "set", "", "1-0", *args)
    assert code == 2 and "LABEL" in err
    code, out, err = cli(capsys, "offsets", "set", "fresh", "18446744073709551615-0", *args)
    assert code == 0 and json.loads(out)["new_label"] is True and "new" in err
    code, out, err = cli(capsys, "offsets", "set", "fresh", "0007-3", *args)
    assert code == 0 and json.loads(out)["new_label"] is False and err == ""


def test_a_new_label_in_a_store_with_other_offsets_needs_start_from(
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    first = xadd_event(rclient, "g", "container_exited")
    make_worker().run()
    second = xadd_event(rclient, "g", "probe_recovered")
    args = ["consume", "--drain", "--redis-url", redis_url, "--db", db_location]
    typo = run_cli(*args, "--label", "health_event")
    assert typo.returncode == 1 and typo.stderr.count("\n") == 1, typo.stderr
    assert "'health_events'" in typo.stderr and "--start-from" in typo.stderr
    assert offsets.load(db.conn, "health_event") is None
    assert run_cli(*args, "--label", "audit", "--start-from", "end").returncode == 0
    assert offsets.load(db.conn, "audit") == second  # started at the end: nothing re-applied
    again = run_cli(*args, "--label", "audit", "--start-from", "beginning")
    assert again.returncode == 0 and "--start-from ignored" in again.stderr, again.stderr
    assert offsets.load(db.conn, "audit") == second  # a stored offset wins
    assert run_cli(*args, "--label", "replica", "--start-from", first).returncode == 0
    assert offsets.load(db.conn, "replica") == second
    bad = run_cli(*args, "--label", "x", "--start-from", "yesterday")
    assert bad.returncode == 2 and "--start-from" in bad.stderr
    assert len(published(rclient)) == 2  # the replica re-read second: debounced, no repeat


# -- case 7: a database created or changed by mistake --------------------------------------


def test_consume_never_creates_a_database_or_its_folders(tmp_path: Path, redis_url: str) -> None:
    typo = tmp_path / "no" / "such" / "healthfsm.db"
    result = run_cli("consume", "--drain", "--redis-url", redis_url, "--db", str(typo))
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert str(typo) in result.stderr and "healthfsm init" in result.stderr
    assert not (tmp_path / "no").exists()
    missing = tmp_path / "healthfsm.db"
    result = run_cli("consume", "--drain", "--redis-url", redis_url, "--db", str(missing))
    assert result.returncode == 1 and not missing.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["runtime", "list"],
        ["runtime", "show", "g"],
        ["runtime", "history", "g"],
        ["offsets", "show"],
        ["dead-letters", "list"],
        ["outbox", "show"],
        ["runtime", "set-status", "g", "--from", "running", "--to", "stopped"],
        ["offsets", "set", LABEL, "1-0", "--yes"],
        ["runtime", "add", "g"],
        ["init"],
        ["migrate"],
        ["demo"],
    ],
)
def test_a_foreign_sqlite_file_is_refused_and_left_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    other = tmp_path / "billing.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
    conn.execute("INSERT INTO invoices (total) VALUES (42)")
    conn.commit()
    conn.close()
    before = digest(other)
    code, _, err = cli(capsys, *argv, "--db", str(other))
    assert code == 1 and err.count("\n") == 1 and "invoices" in err, err
    assert digest(other) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["billing.db"]  # no -wal, no -shm


def test_read_only_commands_never_write_and_refuse_an_old_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = old_stores.write_sqlite(2, tmp_path / "old.db")
    before = digest(path)
    for argv in (["runtime", "list"], ["offsets", "show"], ["dead-letters", "list"]):
        code, _, err = cli(capsys, *argv, "--db", str(path))
        assert code == 1 and f"healthfsm migrate --db {path}" in err and err.count("\n") == 1
    assert digest(path) == before
    code, out, _ = cli(capsys, "migrate", "--db", str(path))
    assert code == 0 and json.loads(out)["from_version"] == 2
    code, out, _ = cli(capsys, "runtime", "list", "--json", "--db", str(path))
    assert code == 0 and [r["game_id"] for r in json.loads(out)] == ["game-1", "game-2"]
    settled = digest(path)
    for argv in (["runtime", "list"], ["runtime", "show", "game-1"], ["offsets", "show"]):
        assert cli(capsys, *argv, "--db", str(path))[0] == 0
    assert digest(path) == settled


def test_init_creates_only_when_asked_and_runtime_add_needs_the_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "new.db"
    code, out, _ = cli(capsys, "init", "--db", str(path))
    assert code == 0 and json.loads(out)["state"] == "created" and path.exists()
    code, out, _ = cli(capsys, "init", "--db", str(path))
    assert code == 0 and json.loads(out)["state"] == "already a healthfsm store"
    nested = tmp_path / "missing" / "x.db"
    code, _, err = cli(capsys, "runtime", "add", "g", "--db", str(nested))
    assert code == 1 and "does not exist" in err and not nested.parent.exists()


@pytest.mark.sqlite_only
def test_demo_refuses_a_store_with_games(
    capsys: pytest.CaptureFixture[str], db: Store, db_path: Path
) -> None:
    add_games(db, ("real", Status.RUNNING))
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = digest(db_path)
    code, _, err = cli(capsys, "demo", "--db", str(db_path))
    assert code == 1 and "already holds 1 games" in err
    assert digest(db_path) == before


def test_lobby_stream_equal_to_the_input_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], db_location: str, db: Store, redis_url: str
) -> None:
    code, _, err = cli(
        capsys,
        "consume",
        "--drain",
        "--stream",
        "s",
        "--lobby-stream",
        "s",
        "--redis-url",
        redis_url,
        "--db",
        db_location,
    )
    assert code == 2 and "--lobby-stream" in err and err.count("\n") == 1


# -- case 8 and 9: bounded copies, occurred_at_ms ------------------------------------------


def test_a_huge_game_id_is_kept_and_logged_in_bounded_form(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    huge = "x" * 10_000_000
    xadd_event(rclient, huge, "probe_failed")
    caplog.set_level(logging.DEBUG)
    make_worker().run()
    [row] = dead_letters.list_recent(db.conn)
    assert row["reason"] == "unknown_game"
    assert len(str(row["detail"])) <= 1100 and len(str(row["fields"])) <= 4096
    stored = sum(len(str(v)) for v in row.values())
    assert stored < 6000  # a few KiB in all
    assert len(caplog.text) < 20_000


def test_any_rejection_reason_is_cut_before_it_is_stored() -> None:
    from consumer.errors import DecodeError
    from consumer.runtime.batch import _dead_letter

    error = DecodeError("invalid_field", "y" * 50_000)
    dead = _dead_letter("1-0", STREAM, error, {b"game_id": b"g"}, FIXED_NOW_MS)
    assert 1000 < len(dead.detail) <= 1100 and dead.detail.endswith("more chars)")


@pytest.mark.parametrize(
    ("raw", "applied"),
    [
        ("00000000000000000001", True),
        ("0009223372036854775807", True),
        ("9223372036854775808", False),
        ("0000", False),
    ],
)
def test_occurred_at_ms_follows_its_rule_exactly(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    raw: str,
    applied: bool,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "g", "probe_failed", occurred_at_ms=raw)
    make_worker().run()
    assert (records.get(db.conn, "g").engine_health == "probe_failed") is applied
    assert (dead_letters.list_recent(db.conn) == []) is applied
