"""``/healthz``, ``/readyz`` and systemd's notify protocol, through real ``consume``
processes on a real Redis and real SQLite files: working, standing by, Redis down, a store
that is not there yet, a wedged loop, and the datagrams a ``Type=notify`` unit receives."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.devtools import embedded
from consumer.devtools.embedded import free_port
from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import SCHEMA_VERSION, open_database
from tests.conftest import FIXED_NOW_MS, add_games, xadd_event
from tests.processes import Consume, wait_for


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of one probe; it must answer within a second."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def answers(port: int, path: str, status: int, **expected: object) -> bool:
    try:
        code, body = probe(port, path)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return code == status and all(body.get(k) == v for k, v in expected.items())


@pytest.fixture
def own_redis() -> Iterator[embedded.EmbeddedRedis]:
    server = embedded.start()
    yield server
    server.stop()


def start_worker(
    tmp_path: Path,
    name: str,
    redis_url: str,
    db: str,
    *extra: str,
    env: dict[str, str] | None = None,
) -> tuple[Consume, int]:
    port = free_port()
    worker = Consume(
        tmp_path / f"{name}.log",
        *("--redis-url", redis_url, "--db", db, "--metrics-port", str(port)),
        *("--block-ms", "100", "--lease-ttl", "2"),
        *extra,
        env=env,
    )
    return worker, port


def store_with_game(path: Path) -> str:
    db = open_database(str(path), create=True)
    add_games(db, ("g", Status.RUNNING))
    db.close()
    return str(path)


def test_working_and_standby_are_live_and_ready(
    tmp_path: Path, redis_url: str, rclient: redis.Redis, db_path: Path
) -> None:
    db = store_with_game(db_path)
    xadd_event(rclient, "g", "container_exited")
    active, port = start_worker(tmp_path, "active", redis_url, db)
    standby = None
    try:
        wait_for(lambda: answers(port, "/readyz", 200, role="active"), 20, "active ready")
        assert wait_for_published(rclient, 1)
        code, body = probe(port, "/healthz")
        assert code == 200 and body["status"] == "ok" and body["failing"] == []
        code, body = probe(port, "/readyz")
        holder = body["lease"]["holder"]
        assert holder and str(active.pid) in holder
        standby, standby_port = start_worker(tmp_path, "standby", redis_url, db)
        wait_for(lambda: answers(standby_port, "/readyz", 200, role="standby"), 20, "standby")
        code, body = probe(standby_port, "/readyz")
        assert str(active.pid) in body["lease"]["holder"]  # it names the holder
        assert probe(standby_port, "/healthz")[0] == 200
    finally:
        if standby is not None:
            assert standby.stop() == 0
        assert active.stop() == 0


def wait_for_published(client: redis.Redis, n: int) -> bool:
    wait_for(lambda: client.xlen("gm:lobby_events") >= n, 20, "published")
    return True


def test_redis_down_fails_readiness_not_liveness(
    tmp_path: Path, own_redis: embedded.EmbeddedRedis, db_path: Path
) -> None:
    db = store_with_game(db_path)
    worker, port = start_worker(tmp_path, "w", own_redis.url, db)
    try:
        wait_for(lambda: answers(port, "/readyz", 200, role="active"), 20, "ready")
        own_redis._terminate()
        wait_for(lambda: answers(port, "/readyz", 503), 20, "not ready while Redis is down")
        started = time.monotonic()
        code, body = probe(port, "/readyz")
        assert time.monotonic() - started < 0.5  # what the loop last saw, not a Redis call
        assert code == 503 and [f["what"] for f in body["failing"]] == ["redis"]
        assert body["failing"][0]["since"].endswith("Z")
        assert probe(port, "/healthz")[0] == 200  # backing off is the loop doing its job
        own_redis.restart()
        wait_for(lambda: answers(port, "/readyz", 200), 30, "ready again")
    finally:
        assert worker.stop() == 0


def test_a_store_not_there_yet_fails_readiness_while_it_is_waited_for(
    tmp_path: Path, redis_url: str
) -> None:
    """The probes answer before the store opens: a PostgreSQL server that is down."""
    url = f"postgresql://healthfsm@127.0.0.1:{free_port()}/x"
    worker, port = start_worker(tmp_path, "w", redis_url, url)
    try:
        wait_for(lambda: answers(port, "/readyz", 503, role="starting"), 20, "probes up")
        _, body = probe(port, "/readyz")
        assert [f["what"] for f in body["failing"]] == ["store", "role"]
        assert probe(port, "/healthz")[0] == 200
    finally:
        assert worker.stop() == 0


def test_a_wedged_loop_fails_liveness(
    tmp_path: Path, redis_url: str, rclient: redis.Redis, db_path: Path
) -> None:
    db = store_with_game(db_path)
    worker, port = start_worker(
        tmp_path,
        "w",
        redis_url,
        db,
        env={"HEALTHFSM_TEST_HOOKS": "1", "HEALTHFSM_INJECT_FAULT": "after_commit:1:hang"},
    )
    try:
        wait_for(lambda: answers(port, "/healthz", 200), 20, "live at first")
        _, body = probe(port, "/healthz")
        bound = body["liveness_bound_s"]
        assert bound == 2 * 0.1 + 2 + 10  # two reads, the lease TTL, the longest backoff
        xadd_event(rclient, "g", "container_exited")  # the loop hangs after this commit
        wait_for(lambda: answers(port, "/healthz", 503), bound + 10, "liveness fails")
        _, body = probe(port, "/healthz")
        assert body["failing"][-1]["what"] == "loop"
    finally:
        worker.process.kill()
        worker.wait()


def test_a_newer_schema_fails_readiness(redis_url: str, db_path: Path) -> None:
    """A newer release migrated the store under a running worker (in-process here, to set
    the progress interval that paces the schema check)."""
    db = open_database(str(db_path), create=True)
    settings = ConsumerSettings(
        redis_url=redis_url,
        db_path=str(db_path),
        block_ms=50,
        metrics_port=0,
        progress_interval_s=0.1,
    )
    worker = Worker(settings, db, clock=lambda: FIXED_NOW_MS)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: worker.metrics_port and answers(worker.metrics_port, "/readyz", 200))
        other = open_database(str(db_path))
        with other.write() as conn:  # SQLite keeps the version in PRAGMA user_version
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        other.close()
        assert worker.metrics_port is not None
        port = worker.metrics_port
        wait_for(lambda: answers(port, "/readyz", 503), 10, "schema noticed")
        _, body = probe(port, "/readyz")
        assert [f["what"] for f in body["failing"]] == ["schema"]
    finally:
        worker.request_stop()
        thread.join(10)
        db.close()


@contextlib.contextmanager
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()


def test_systemd_hears_ready_watchdog_status_and_stopping(
    tmp_path: Path, redis_url: str, db_path: Path
) -> None:
    db = store_with_game(db_path)
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
        worker, _ = start_worker(tmp_path, "w", redis_url, db, env=env)
        env.pop("WATCHDOG_USEC")
        heard: list[str] = []

        def listen(until: float) -> None:
            while time.monotonic() < until:
                with contextlib.suppress(TimeoutError):
                    heard.extend(sock.recv(4096).decode().splitlines())

        try:
            deadline = time.monotonic() + 20
            while heard.count("WATCHDOG=1") < 2 and time.monotonic() < deadline:
                listen(time.monotonic() + 0.5)
            assert "READY=1" in heard
            assert heard.count("WATCHDOG=1") >= 2
            assert any(line.startswith("STATUS=active") for line in heard)
            assert heard.index("READY=1") < heard.index("WATCHDOG=1") or "READY=1" in heard
            worker.signal(signal.SIGTERM)
            listen(time.monotonic() + 2)
            assert "STOPPING=1" in heard
        finally:
            assert worker.stop() == 0


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.runtime.systemd import Notifier

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier.send("READY=1") is False
    for env, interval in (
        ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}, 0.5),
        ({"NOTIFY_SOCKET": "/x"}, None),
    ):
        told = Notifier(env)
        assert told.watchdog_interval_s == interval
        told.close()
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    elsewhere = Notifier(env)  # the watchdog is meant for another process
    assert elsewhere.watchdog_interval_s is None
    elsewhere.close()
