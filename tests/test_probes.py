"""``/healthz``, ``/readyz`` and systemd's notify protocol, through real ``consume``
processes on a real Redis and real SQLite files: working, standing by, Redis down, a store
that is not there yet, a wedged loop, and the datagrams a ``Type=notify`` unit receives."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
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
from prometheus_client.parser import text_string_to_metric_families

from consumer.devtools import embedded
from consumer.devtools.embedded import free_port
from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import SCHEMA_VERSION, open_database, partitions
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
        measured = lambda: not math.isnan(scrape(port)["healthfsm_consumer_lag_seconds"])  # noqa: E731
        wait_for(measured, 30, "the lag measured (the first progress interval)")
        own_redis._terminate()
        wait_for(lambda: answers(port, "/readyz", 503), 20, "not ready while Redis is down")
        started = time.monotonic()
        code, body = probe(port, "/readyz")
        assert time.monotonic() - started < 0.5  # what the loop last saw, not a Redis call
        assert code == 503 and [f["what"] for f in body["failing"]] == ["redis"]
        assert body["lag_seconds"] is None  # as /metrics: unknown, not a reassuring 0
        assert body["failing"][0]["since"].endswith("Z")
        assert probe(port, "/healthz")[0] == 200  # backing off is the loop doing its job
        scraped = scrape(port)  # /metrics says what /readyz says, and no reassuring lag
        assert (
            scraped["healthfsm_ready"] == 0 and scraped['healthfsm_readiness{reason="redis"}'] == 1
        )
        assert math.isnan(scraped["healthfsm_consumer_lag_seconds"])
        own_redis.restart()
        wait_for(lambda: answers(port, "/readyz", 200), 30, "ready again")
        wait_for(lambda: scrape(port)["healthfsm_ready"] == 1, 30, "the metric ready again")
        assert scrape(port)['healthfsm_readiness{reason="ready"}'] == 1
    finally:
        assert worker.stop() == 0


def scrape(port: int) -> dict[str, float]:
    """One scrape of ``/metrics``: each sample's name with its labels, and its value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
        text = answer.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            found[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return found


def test_metrics_say_what_the_worker_consumes_and_agree_with_readyz_from_the_start(
    tmp_path: Path, redis_url: str, db_path: Path
) -> None:
    db = store_with_game(db_path)
    worker, port = start_worker(tmp_path, "w", redis_url, db, "--label", "blue")
    try:
        wait_for(lambda: answers(port, "/readyz", 200, role="active"), 20, "ready")
        scraped = scrape(port)
        assert scraped["healthfsm_live"] == 1
        info = 'healthfsm_worker_info{label="blue",lobby_stream="gm:lobby_events",'
        assert scraped[info + 'stream="runtime:health_events"}'] == 1
        assert scraped["healthfsm_ready"] == 1
        assert sum(v for k, v in scraped.items() if k.startswith("healthfsm_readiness{")) == 1
        assert scraped["process_resident_memory_bytes"] > 0 and "python_info" in str(scraped)
    finally:
        assert worker.stop() == 0


def test_the_probe_s_lease_expiry_follows_the_renewals(
    tmp_path: Path, redis_url: str, db_path: Path
) -> None:
    """The body's lease expiry moves with each renewal, as the store's does (it was set
    when the lease was taken and never again: behind the store's, and soon in the past)."""
    db = store_with_game(db_path)
    worker, port = start_worker(tmp_path, "w", redis_url, db)
    store = open_database(db, read_only=True)
    try:
        wait_for(lambda: answers(port, "/readyz", 200, role="active"), 20, "ready")
        first = probe(port, "/readyz")[1]["lease"]["until_ms"]

        def stored() -> int:
            leases = partitions.read_leases(store.conn, "health_events")
            return max(lease.expires_at_ms for lease in leases.values())

        wait_for(lambda: stored() > first, 20, "a renewal in the store")
        wait_for(
            lambda: probe(port, "/readyz")[1]["lease"]["until_ms"] > first,
            20,
            "the renewal in the probe's body",
        )
    finally:
        store.close()
        assert worker.stop() == 0


def test_a_store_not_there_yet_fails_readiness_while_it_is_waited_for(
    tmp_path: Path, redis_url: str
) -> None:
    """The probes answer before the store opens: a PostgreSQL server that is down. systemd
    hears what the worker waits for, and STOPPING=1 when a stop comes first."""
    url = f"postgresql://healthfsm@127.0.0.1:{free_port()}/x"
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        worker, port = start_worker(tmp_path, "w", redis_url, url, env=env)
        heard: list[tuple[float, str]] = []
        try:
            wait_for(lambda: answers(port, "/readyz", 503, role="starting"), 20, "probes up")
            _, body = probe(port, "/readyz")
            assert [f["what"] for f in body["failing"]] == ["store", "role"]
            assert probe(port, "/healthz")[0] == 200
            _heard(sock, heard, 0.5)
            assert any(line.startswith("STATUS=waiting for the store") for _, line in heard)
        finally:
            assert worker.stop() == 0
        _heard(sock, heard, 0.5)
        lines = [line for _, line in heard]
        assert "STOPPING=1" in lines and "READY=1" not in lines


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
        assert scrape(port)["healthfsm_live"] == 0  # what HealthfsmLoopStuck pages on
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


def _heard(sock: socket.socket, into: list[tuple[float, str]], seconds: float) -> None:
    """Collect the datagrams that arrive within ``seconds``, with when each came."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with contextlib.suppress(TimeoutError):
            data = sock.recv(4096).decode()
            into.extend((time.monotonic(), line) for line in data.splitlines())


def test_ready_waits_for_redis_and_the_status_says_so(
    tmp_path: Path, own_redis: embedded.EmbeddedRedis, db_path: Path
) -> None:
    """READY=1 means the worker works: not while Redis does not answer (it was sent when
    the lease was taken, 0.4 s after start); STATUS= says what it waits for."""
    db = store_with_game(db_path)
    own_redis._terminate()
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        worker, _ = start_worker(tmp_path, "w", own_redis.url, db, env=env)
        heard: list[tuple[float, str]] = []
        try:
            wait_for(lambda: worker.stderr().count("redis unavailable") >= 3, 30, "three retries")
            _heard(sock, heard, 0.5)
            lines = [line for _, line in heard]
            assert "READY=1" not in lines
            assert any(line.startswith("STATUS=waiting for redis") for line in lines), lines
            own_redis.restart()
            deadline = time.monotonic() + 30
            while "READY=1" not in [line for _, line in heard] and time.monotonic() < deadline:
                _heard(sock, heard, 0.5)
            assert "READY=1" in [line for _, line in heard]
        finally:
            assert worker.stop() == 0


def test_the_watchdog_hears_the_loop_all_through_a_long_backoff(
    tmp_path: Path, own_redis: embedded.EmbeddedRedis, db_path: Path
) -> None:
    """With WatchdogSec=8 the pings come at least every 4 s, also while the loop waits out
    a Redis outage with backoffs of 6.4 and 10 s (they stopped for the whole wait)."""
    db = store_with_game(db_path)
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "8000000"}
        worker, port = start_worker(tmp_path, "w", own_redis.url, db, env=env)
        heard: list[tuple[float, str]] = []
        try:
            wait_for(lambda: answers(port, "/readyz", 200, role="active"), 20, "ready")
            own_redis._terminate()
            deadline = time.monotonic() + 60
            while "retrying in 10.0s" not in worker.stderr() and time.monotonic() < deadline:
                _heard(sock, heard, 0.5)
            assert "retrying in 6.4s" in worker.stderr()  # a long wait went by meanwhile
            pings = [at for at, line in heard if line == "WATCHDOG=1"]
            gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
            assert len(pings) >= 4 and max(gaps) <= 4.0, gaps
        finally:
            own_redis.restart()
            assert worker.stop() == 0


def test_a_stream_reset_leaves_the_worker_up_failed_and_holding_nothing_until_stopped(
    tmp_path: Path, own_redis: embedded.EmbeddedRedis, db_path: Path
) -> None:
    """Under --on-stream-reset stop the worker no longer exits into its unit's restart loop
    (a reset then paged as "no active worker", the counter never scraped): it stays up,
    says so everywhere, and lets go of its partitions so that the offset can be moved."""
    db = store_with_game(db_path)
    client = redis.Redis.from_url(own_redis.url)
    xadd_event(client, "g", "container_exited")
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        worker, port = start_worker(tmp_path, "w", own_redis.url, db, env=env)
        heard: list[tuple[float, str]] = []
        store = open_database(db, read_only=True)
        try:
            wait_for(lambda: client.xlen("gm:lobby_events") >= 1, 20, "the entry applied")
            client.delete("runtime:health_events")  # Redis lost the stream under the offset
            wait_for(lambda: answers(port, "/readyz", 503), 30, "failed")
            scraped = scrape(port)
            assert scraped['healthfsm_readiness{reason="fatal"}'] == 1
            assert scraped["healthfsm_stream_resets_total"] == 1
            assert scraped["healthfsm_lease_held"] == 0
            assert probe(port, "/healthz")[0] == 200  # alive: a restart would not help
            _, body = probe(port, "/readyz")  # and the body agrees with the metrics
            assert body["role"] == "failed" and body["lease"]["holder"] is None
            assert body["lag_seconds"] is None and body["lag_entries"] is None
            assert [f["what"] for f in body["failing"]] == ["fatal"]
            assert partitions.live_leases(store.conn, int(time.time() * 1000)) == []  # given up
            _heard(sock, heard, 0.5)
            assert any(line.startswith("STATUS=failed: stream") for _, line in heard), heard
            assert worker.process.poll() is None  # up, until an operator acts
            worker.signal(signal.SIGTERM)
            assert worker.wait() == 1
            assert "was reset" in worker.stderr() and "offsets set" in worker.stderr()
        finally:
            store.close()
            client.close()
            worker.stop()


def test_systemd_hears_stopping_when_a_drain_ends(
    tmp_path: Path, redis_url: str, db_path: Path
) -> None:
    """STOPPING=1 on every way out, not only on a signal."""
    db = store_with_game(db_path)
    with notify_socket(tmp_path) as sock:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        worker, _ = start_worker(tmp_path, "w", redis_url, db, "--drain", env=env)
        assert worker.wait(60) == 0
        heard: list[tuple[float, str]] = []
        _heard(sock, heard, 0.5)
        assert [line for _, line in heard if line == "STOPPING=1"] == ["STOPPING=1"]


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    from consumer.runtime.systemd import Notifier

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and notifier.send("READY=1") is False
    for env, interval in (
        ({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000"}, 0.25),
        ({"NOTIFY_SOCKET": "/x"}, None),
    ):
        told = Notifier(env)
        assert told.watchdog_interval_s == interval
        told.close()
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    elsewhere = Notifier(env)  # the watchdog is meant for another process
    assert elsewhere.watchdog_interval_s is None
    elsewhere.close()
