"""Running it in production: metrics, progress and lag, gaps, the health probe, operator
commands and the minimal Redis ACL, all against the real Redis and SQLite."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from consumer.devtools import embedded
from consumer.errors import InjectedFault
from consumer.runtime import faults
from consumer.runtime.faults import FaultPoint
from statemachine import Status
from store import SCHEMA_VERSION, history, outbox, records
from store.admin import set_status
from store.backend import Store
from tests.conftest import FIXED_NOW_MS, WorkerFactory, add_games, published, xadd_event
from tests.processes import cli_in_process as run_cli
from tests.streams import entries

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"
MINIMAL_ACL = (
    "on >worker-pw resetkeys ~runtime:health_events ~gm:lobby_events"
    " ~{gm:lobby_events}:healthfsm:* resetchannels -@all"
    " +ping +xread +xrange +xrevrange +xinfo|stream +xadd +evalsha +script|load +hget +hmget +hset"
)
"""The README's minimal ACL (Redis 6.2 form; on Redis 7 the test uses the README's %R/%W form)."""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.rsplit(" ", 1)[0] == line_start:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in metrics")


def test_metrics_are_served_and_count_what_happened(
    db: Store, rclient: redis.Redis, make_worker: WorkerFactory
) -> None:
    add_games(db, ("g", Status.RUNNING), ("h", Status.GENERATION_IN_PROGRESS))
    xadd_event(rclient, "g", "container_exited")
    xadd_event(rclient, "h", "container_oom")
    xadd_event(rclient, "ghost", "probe_failed")
    rclient.xadd(STREAM, {"game_id": "g"})
    worker = make_worker(metrics_port=0)
    worker.run()
    assert worker.metrics_port
    text = scrape(worker.metrics_port)
    assert metric(text, "healthfsm_events_consumed_total") == 4
    assert metric(text, 'healthfsm_events_rejected_total{reason="unknown_game"}') == 1
    assert metric(text, 'healthfsm_events_rejected_total{reason="missing_field"}') == 1
    assert (
        metric(
            text,
            'healthfsm_status_transitions_total{from_status="running",'
            'to_status="engine_unreachable",trigger="container_exited"}',
        )
        == 1
    )
    held = 'event_type="container_oom",status="generation_in_progress"'
    assert metric(text, "healthfsm_cas_conflicts_total{" + held + "}") == 1
    assert metric(text, "healthfsm_snapshots_published_total") == 2
    assert metric(text, "healthfsm_batch_size_count") == 1
    assert metric(text, "healthfsm_batch_duration_seconds_count") == 1
    assert metric(text, "healthfsm_up") == 0  # the run is over
    assert "ghost" not in text and '"g"' not in text  # never a game id as a label
    for name in (
        "healthfsm_outbox_pending",
        "healthfsm_consumer_lag_entries",
        "healthfsm_consumer_lag_seconds",
        "healthfsm_redis_reconnects_total",
        "healthfsm_stream_gaps_total",
    ):
        assert f"# TYPE {name}" in text


def test_progress_line_and_lag_gauges(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    caplog.set_level(logging.INFO)
    worker = make_worker(drain=False, block_ms=20, progress_interval_s=0.05, batch_size=2)
    for _ in range(5):
        xadd_event(rclient, "g", "probe_failed")
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while "progress:" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        while worker.totals.entries < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.15)  # one more tick after catching up
    finally:
        worker.request_stop()
        thread.join(timeout=10)
    progress = [r for r in caplog.records if r.getMessage().startswith("progress:")]
    assert progress and "lag" in progress[-1].getMessage()
    assert progress[-1].levelno == logging.INFO
    assert worker.metrics.lag_entries._value.get() == 0
    assert worker.metrics.lag_seconds._value.get() == 0
    assert worker.metrics.outbox_pending._value.get() == 0
    assert worker.metrics.up._value.get() == 0
    per_event = [
        r for r in caplog.records if r.levelno >= logging.INFO and "probe_failed" in r.getMessage()
    ]
    assert per_event == []  # no per-event INFO lines


def test_lag_counts_unread_entries(rclient: redis.Redis) -> None:
    from consumer.runtime.stream_view import lag

    first = xadd_event(rclient, "g", "probe_failed")
    for _ in range(3):
        xadd_event(rclient, "g", "probe_failed")
    entries, seconds = lag(rclient, STREAM, first, int(time.time() * 1000) + 2000)
    assert entries == 3 and 1.5 < seconds < 10


def test_gap_is_logged_counted_and_consumption_goes_on(
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "g", "probe_failed")
    make_worker().run()
    for _ in range(4):
        xadd_event(rclient, "g", "container_started")
    rclient.xtrim(STREAM, maxlen=0, approximate=False)  # trimmed while the worker was down
    survivor = xadd_event(rclient, "g", "container_exited")
    code, _, err = run_cli(capsys, "check", "--redis-url", redis_url, "--db", db_location)
    assert code == 1 and "trimmed" in err and err.count("\n") == 1
    caplog.set_level(logging.INFO)
    worker = make_worker()
    worker.run()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "trimmed past the stored offset" in errors[0].getMessage()
    info = rclient.info("server")
    if int(str(info["redis_version"]).split(".")[0]) >= 7:
        assert "about 4 entries" in errors[0].getMessage()
        assert worker.metrics.gap_entries._value.get() == 4
    assert worker.metrics.gaps._value.get() == 1
    assert records.get(db.conn, "g").state is Status.ENGINE_UNREACHABLE
    assert published(rclient)[-1]["source_entry_id"] == survivor
    code, out, _ = run_cli(capsys, "check", "--redis-url", redis_url, "--db", db_location)
    assert code == 0 and out.startswith("ok:")


def test_check_fails_clearly(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    code, out, _ = run_cli(capsys, "check", "--redis-url", redis_url, "--db", db_location)
    assert code == 0 and f"schema v{SCHEMA_VERSION}" in out
    code, _, err = run_cli(
        capsys, "check", "--redis-url", "redis://127.0.0.1:1/0", "--db", db_location
    )
    assert code == 1 and err.count("\n") == 1 and "redis at redis://127.0.0.1:1/0" in err
    code, _, err = run_cli(
        capsys, "check", "--redis-url", redis_url, "--db", str(tmp_path / "none.db")
    )
    assert code == 1 and "does not exist" in err
    with db.write() as sql:  # back to schema version 1, as an old healthfsm left it
        sql.execute("DELETE FROM schema_migrations WHERE version > 1")
        if db.dialect == "sqlite":
            sql.execute("PRAGMA user_version=1")
    code, _, err = run_cli(capsys, "check", "--redis-url", redis_url, "--db", db_location)
    assert code == 1 and "schema version 1" in err and "healthfsm migrate" in err


def test_offsets_show_and_set(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    first = xadd_event(rclient, "g", "probe_failed")
    xadd_event(rclient, "g", "container_started")
    make_worker().run()
    code, out, _ = run_cli(capsys, "offsets", "show", "--json", "--db", db_location)
    [row] = json.loads(out)
    assert row["label"] == "health_events" and row["entries_read"] == 2
    code, _, err = run_cli(capsys, "offsets", "set", "health_events", first, "--db", db_location)
    assert code == 2 and "--yes" in err
    code, out, _ = run_cli(
        capsys, "offsets", "set", "health_events", first, "--yes", "--db", db_location
    )
    assert code == 0 and json.loads(out)["entry_id"] == first
    worker = make_worker()
    worker.run()
    assert worker.totals.entries == 1  # the entry after the moved offset is applied again


def test_dead_letters_list_and_replay_after_the_game_is_registered(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    xadd_event(rclient, "late", "container_exited")
    rclient.xadd(STREAM, {"game_id": b"\xff", "event_type": "probe_failed", "occurred_at_ms": "1"})
    make_worker().run()
    code, out, _ = run_cli(
        capsys, "dead-letters", "list", "--json", "--reason", "unknown_game", "--db", db_location
    )
    assert [r["reason"] for r in json.loads(out)] == ["unknown_game"]
    code, _, err = run_cli(capsys, "dead-letters", "list", "--reason", "nope", "--db", db_location)
    assert code == 2 and "unknown reason" in err
    add_games(db, ("late", Status.RUNNING))
    code, out, _ = run_cli(
        capsys,
        "dead-letters",
        "replay",
        "--reason",
        "unknown_game",
        "--redis-url",
        redis_url,
        "--db",
        db_location,
    )
    assert code == 0 and json.loads(out)["replayed"] == 1
    code, out, _ = run_cli(
        capsys,
        "dead-letters",
        "replay",
        "--reason",
        "invalid_field",
        "--redis-url",
        redis_url,
        "--db",
        db_location,
    )
    assert json.loads(out)["replayed"] == 0 and len(json.loads(out)["skipped"]) == 1
    make_worker().run()
    assert records.get(db.conn, "late").state is Status.ENGINE_UNREACHABLE
    code, out, _ = run_cli(capsys, "dead-letters", "list", "--json", "--db", db_location)
    assert [r["reason"] for r in json.loads(out)] == ["invalid_field"]  # replayed row is gone


def test_outbox_show_and_flush(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    entry = xadd_event(rclient, "g", "container_exited")
    faults.arm(FaultPoint.AFTER_COMMIT)
    with pytest.raises(InjectedFault):
        make_worker().run()
    code, out, _ = run_cli(capsys, "outbox", "show", "--json", "--db", db_location)
    assert [r["source_entry_id"] for r in json.loads(out)] == [entry]
    code, out, _ = run_cli(capsys, "outbox", "flush", "--redis-url", redis_url, "--db", db_location)
    assert code == 0 and json.loads(out)["published"] == 1
    assert [s["source_entry_id"] for s in published(rclient)] == [entry]
    assert outbox.pending(db.conn) == 0


def test_runtime_history_shows_a_games_newest_changes_and_the_log_is_bounded(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, ("g", Status.RUNNING), ("quiet", Status.RUNNING))
    ids = []
    for index in range(history.HISTORY_PER_GAME + 10):
        ids.append(xadd_event(rclient, "g", "probe_failed" if index % 2 else "container_started"))
    xadd_event(rclient, "g", "probe_failed")  # the same summary again: no change, no history
    xadd_event(rclient, "quiet", "probe_failed")  # one change for the other game
    make_worker(batch_size=7).run()
    set_status(db, "g", Status.RUNNING, Status.STOPPED, FIXED_NOW_MS)
    code, out, _ = run_cli(capsys, "runtime", "history", "g", "--json", "--db", db_location)
    rows = json.loads(out)
    assert len(rows) == history.HISTORY_PER_GAME  # a game's newest 50, oldest first
    assert rows[-1]["cause"] == "admin" and rows[-1]["to_status"] == "stopped"
    assert [r["entry_id"] for r in rows[:-1]] == ids[-(history.HISTORY_PER_GAME - 1) :]
    assert all(r["from_status"] == r["to_status"] == "running" for r in rows[:-1])
    code, out, _ = run_cli(capsys, "runtime", "history", "quiet", "--json", "--db", db_location)
    assert [r["cause"] for r in json.loads(out)] == ["probe_failed"]  # only its own rows
    # The log as a whole is bounded (HISTORY_ROWS; 10 here): the oldest rows go first.
    newest = db.conn.execute("SELECT id FROM runtime_history ORDER BY id DESC LIMIT 9").fetchall()
    with db.write() as conn:
        row = history.HistoryRow("x", "1-0", "c", "a", "b", "h", 1, 1)
        history.add_many(conn, [row], keep=10)
    kept = db.conn.execute("SELECT id, game_id FROM runtime_history ORDER BY id").fetchall()
    assert [row[0] for row in kept[:-1]] == sorted(i for (i,) in newest)
    assert len(kept) == 10 and kept[-1][1] == "x"
    code, _, err = run_cli(capsys, "runtime", "history", "nope", "--db", db_location)
    assert code == 1 and "no runtime record" in err


def test_worker_runs_under_the_minimal_acl(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    make_worker: WorkerFactory,
) -> None:
    with embedded.running() as server:
        admin = redis.Redis.from_url(server.url)
        acl = MINIMAL_ACL
        if int(str(admin.info("server")["redis_version"]).split(".")[0]) >= 7:
            # the input stream read-only; the lobby stream is a script's key: read and write
            acl = MINIMAL_ACL.replace("~runtime:health_events", "%R~runtime:health_events")
        admin.execute_command("ACL", "SETUSER", "healthfsm", *acl.split())  # type: ignore[no-untyped-call]
        admin.execute_command("ACL", "SETUSER", "default", "off")  # type: ignore[no-untyped-call]
        url = f"redis://healthfsm:worker-pw@127.0.0.1:{server.port}/0"
        producer = redis.Redis.from_url(url.replace("healthfsm:worker-pw", "healthfsm:worker-pw"))
        with pytest.raises(redis.RedisError):
            producer.set("other-key", "x")  # the user can do nothing else
        if "%R~" in acl:
            with pytest.raises(redis.RedisError):
                producer.xadd(STREAM, {"game_id": "g"})  # the input stream is read-only
            admin.xadd(
                STREAM, {"game_id": "g", "event_type": "container_exited", "occurred_at_ms": "1"}
            )
        else:
            xadd_event(producer, "g", "container_exited")
        add_games(db, ("g", Status.RUNNING))
        worker = make_worker(redis_url=url, metrics_port=None)
        worker.run()
        assert records.get(db.conn, "g").state is Status.ENGINE_UNREACHABLE
        assert len(entries(admin, "gm:lobby_events")) == 1
        code, _, err = run_cli(capsys, "check", "--redis-url", url, "--db", db_location)
        assert code == 0, err
        admin.close()
        producer.close()


def test_json_logs_carry_entry_and_game_ids(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
) -> None:
    add_games(db, ("g", Status.RUNNING))
    bad = xadd_event(rclient, "ghost", "probe_failed")
    code, _, err = run_cli(
        capsys,
        "consume",
        "--drain",
        "--redis-url",
        redis_url,
        "--db",
        db_location,
        "--log-format",
        "json",
        "--log-level",
        "DEBUG",
    )
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    entry, summary = [line for line in lines if line.get("reason") == "unknown_game"]
    assert entry["entry_id"] == bad and entry["game_id"] == "ghost"
    assert entry["level"] == "debug"  # each entry only at DEBUG; the batch's summary above
    assert summary["level"] == "warning" and summary["count"] == 1
    assert summary["first_entry_id"] == summary["last_entry_id"] == bad
    assert not any(
        line["logger"].startswith("transitions") and line["level"] == "info" for line in lines
    )


def test_drain_progress_line(
    db: Store,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from consumer.display import drain_progress
    from consumer.runtime.metrics import Metrics

    add_games(db, ("g", Status.RUNNING))
    for _ in range(3):
        xadd_event(rclient, "g", "probe_failed")
    metrics = Metrics()
    worker = make_worker(batch_size=1, observers=[drain_progress(metrics)], metrics=metrics)
    worker.run()
    err = capsys.readouterr().err
    assert err.count("\r") == 3 and "drained 3 entries" in err


def _make_certs(directory: Path) -> None:
    import subprocess

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=healthfsm-test-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    )


def test_rediss_url_with_ca(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    _make_certs(tmp_path)
    port = embedded.free_port()
    server = subprocess.Popen(
        [
            embedded.find_redis_server(),
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--tls-cert-file",
            str(tmp_path / "server.crt"),
            "--tls-key-file",
            str(tmp_path / "server.key"),
            "--tls-ca-cert-file",
            str(tmp_path / "ca.crt"),
            "--tls-auth-clients",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"rediss://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.skip("this redis-server was built without TLS support")
            code, _out, err = run_cli(
                capsys,
                "check",
                "--redis-url",
                url,
                "--redis-ca",
                str(tmp_path / "ca.crt"),
                "--db",
                db_location,
            )
            if code == 0:
                break
            time.sleep(0.1)
        assert code == 0, err
        code, _, err = run_cli(capsys, "check", "--redis-url", url, "--db", db_location)
        assert code == 1 and "certificate" in err.lower() and err.count("\n") == 1
        code, _, err = run_cli(
            capsys,
            "check",
            "--redis-url",
            url.replace("rediss", "redis"),
            "--redis-ca",
            str(tmp_path / "ca.crt"),
            "--db",
            db_location,
        )
        assert code == 2 and "rediss://" in err  # TLS files with redis:// is a usage error
    finally:
        server.terminate()
        server.wait(timeout=10)
