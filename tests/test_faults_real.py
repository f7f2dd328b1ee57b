"""Faults injected for real: Redis restarts, kill -9 mid-batch, SIGTERM, passwords in URLs."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.devtools import embedded
from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings, ResetPolicy
from statemachine import Status
from store import offsets, open_database, outbox, records
from store.backend import Store
from tests.conftest import FIXED_NOW_MS, add_games, published, xadd_event
from tests.processes import HEALTHFSM, run_cli

pytestmark = pytest.mark.backends("sqlite", "postgres")


def wait_for(predicate: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def own_redis() -> Iterator[embedded.EmbeddedRedis]:
    """A server of the test's own, free to be restarted."""
    server = embedded.start()
    yield server
    server.stop()


def redis_major(client: redis.Redis) -> int:
    return int(str(client.info("server")["redis_version"]).split(".")[0])


def test_worker_survives_a_redis_restart(
    own_redis: embedded.EmbeddedRedis,
    db: Store,
    db_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis restarts with less data than the worker read (a stream of one entry, where the
    worker had read two). Redis 7 counts entries added, so that is a reset; Redis 6.2 cannot
    tell, and the worker reports a gap instead. Either way it goes on, once."""
    add_games(db, ("g", Status.RUNNING))
    settings = ConsumerSettings(
        redis_url=own_redis.url,
        db_path=str(db_path),
        block_ms=100,
        backoff_initial_s=0.02,
        backoff_max_s=0.2,
        on_stream_reset=ResetPolicy.REWIND,  # the restarted server lost data: read its stream anew
    )
    worker = Worker(settings, db, clock=lambda: FIXED_NOW_MS)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        client = redis.Redis.from_url(own_redis.url)
        major = redis_major(client)
        xadd_event(client, "g", "container_exited")
        xadd_event(client, "g", "container_exited")
        wait_for(lambda: worker.totals.snapshots_published == 1)
        client.close()
        with embedded.running() as elsewhere:  # what Redis comes back with: one later entry
            other = redis.Redis.from_url(elsewhere.url)
            last = xadd_event(other, "g", "probe_recovered")
            other.close()
            rdb = elsewhere.save()
            own_redis._terminate()
            wait_for(lambda: worker.totals.reconnects >= 2)
            own_redis.restart(preload=rdb)
        client = redis.Redis.from_url(own_redis.url)
        wait_for(lambda: worker.totals.snapshots_published == 2)
        assert records.get(db.conn, "g").state is Status.RUNNING
        assert offsets.load(db.conn, "health_events") == last
        assert [s["engine_health_summary"] for s in published(client)] == ["healthy"]
        assert worker.metrics.reconnects._value.get() == worker.totals.reconnects >= 2
        resets = worker.metrics.stream_resets._value.get()
        gaps = worker.metrics.gaps._value.get()
        assert (resets, gaps) == ((1, 0) if major >= 7 else (0, 1)), f"Redis {major}"
        if major < 7:  # the gap's ERROR reads as one sentence
            [gap] = [r.getMessage() for r in caplog.records if "was trimmed past" in r.getMessage()]
            assert (
                "the stored offset" in gap
                and (
                    ": an unknown number of entries were never read (Redis before 7 does not count"
                    " added entries); going on from the first surviving entry "
                )
                in gap
            )
        client.close()
    finally:
        worker.request_stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_publish_failure_keeps_the_outbox_until_redis_is_back(
    own_redis: embedded.EmbeddedRedis, db: Store, db_path: Path
) -> None:
    add_games(db, ("g", Status.RUNNING))
    client = redis.Redis.from_url(own_redis.url)
    xadd_event(client, "g", "probe_failed")
    settings = ConsumerSettings(redis_url=own_redis.url, db_path=str(db_path), drain=True)
    worker = Worker(settings, db, clock=lambda: FIXED_NOW_MS)
    original = worker.relay.send
    calls = {"n": 0}

    def vanish_then_send() -> int:
        calls["n"] += 1
        if calls["n"] == 1:  # the send right after the first commit
            own_redis.stop()
            own_redis.restart()
        return original()

    worker.relay.send = vanish_then_send  # type: ignore[method-assign]
    worker.run()
    assert outbox.pending(db.conn) == 0
    assert [s["engine_health_summary"] for s in published(client)] == ["probe_failed"]
    client.close()


def test_kill_9_mid_batch_then_restart_applies_exactly_once(
    redis_url: str, rclient: redis.Redis, db_location: str
) -> None:
    db = open_database(db_location, create=True)
    add_games(db, *[(f"g{i}", Status.RUNNING) for i in range(25)])
    db.close()
    for i in range(25):  # each event changes the status: applying one twice shows
        xadd_event(rclient, f"g{i}", "container_exited")
        xadd_event(rclient, f"g{i}", "probe_recovered")
    base = [
        "consume",
        "--drain",
        "--redis-url",
        redis_url,
        "--db",
        db_location,
        "--batch-size",
        "10",
    ]
    for spec in ["before_commit:3:exit", "after_commit:2:exit", "after_publish:1:exit"]:
        crashed = run_cli(*base, env={"HEALTHFSM_INJECT_FAULT": spec, "HEALTHFSM_TEST_HOOKS": "1"})
        assert crashed.returncode == 137, crashed.stderr
    done = run_cli(*base)
    assert done.returncode == 0, done.stderr
    db = open_database(db_location)
    assert {r.state for r in records.iter_all(db.conn)} == {Status.RUNNING}
    sources = [s["source_entry_id"] for s in published(rclient)]
    assert len(set(sources)) == 50
    assert outbox.pending(db.conn) == 0
    # exactly once: 50 status changes in history, 50 entries counted, nothing more
    assert db.conn.execute("SELECT count(*) FROM runtime_history").fetchone()[0] == 50
    assert offsets.entries_read(db.conn, "health_events") == 50
    db.close()


def test_sigterm_finishes_the_batch_publishes_and_exits_0(
    redis_url: str, rclient: redis.Redis, db_location: str
) -> None:
    db = open_database(db_location, create=True)
    add_games(db, ("g", Status.RUNNING))
    process = subprocess.Popen(
        [
            *HEALTHFSM,
            "consume",
            "--redis-url",
            redis_url,
            "--db",
            db_location,
            "--block-ms",
            "100",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = xadd_event(rclient, "g", "container_exited")
    wait_for(lambda: offsets.load(db.conn, "health_events") == last)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert "SIGTERM" in stderr
    assert [s["source_entry_id"] for s in published(rclient)] == [last]
    db.close()


@pytest.mark.sqlite_only  # Redis's password; the store does not matter
def test_password_in_url_is_never_logged(
    db: Store, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with embedded.running("--requirepass", "s3cret-pw") as server:
        url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
        add_games(db, ("g", Status.RUNNING))
        client = redis.Redis.from_url(url)
        xadd_event(client, "g", "probe_failed")
        caplog.set_level(logging.DEBUG)
        settings = ConsumerSettings(redis_url=url, db_path=str(db_path), drain=True)
        Worker(settings, db).run()
        assert published(client)[0]["engine_health_summary"] == "probe_failed"
        assert "s3cret-pw" not in caplog.text
        assert ":***@127.0.0.1" in caplog.text
        client.close()


def test_password_from_environment(db_path: Path, tmp_path: Path) -> None:
    open_database(db_path, create=True).close()
    with embedded.running("--requirepass", "env-pw") as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        result = run_cli(
            "consume",
            "--drain",
            "--redis-url",
            url,
            "--db",
            str(db_path),
            env={"HEALTHFSM_REDIS_PASSWORD": "env-pw"},
        )
        assert result.returncode == 0, result.stderr
        assert "env-pw" not in result.stderr
        wrong = run_cli(
            "consume",
            "--drain",
            "--redis-url",
            url,
            "--db",
            str(db_path),
            env={"HEALTHFSM_REDIS_PASSWORD": "wrong"},
        )
        assert wrong.returncode == 1
        assert "Traceback" not in wrong.stderr
        assert (
            wrong.stderr.strip()
            .splitlines()[-1]
            .startswith("healthfsm: error: redis authentication failed")
        ), wrong.stderr
        assert "wrong" not in wrong.stderr.replace("WRONGPASS", "")


def test_settings_never_show_the_password() -> None:
    settings = ConsumerSettings.model_validate({"redis_password": "s3cret-pw"})
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings.model_dump())
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "s3cret-pw"
