"""The alert rules against a real Prometheus scraping a real worker.

Debian's Prometheus (unpacked by ``scripts/promtool.sh``, as ``.ci/run`` does for promtool)
scrapes a ``healthfsm consume`` process every second with
``deploy/prometheus/healthfsm-rules.yaml`` loaded and evaluated every second. A planned
re-partition brings no alert at all; a Redis outage brings ``HealthfsmNotReady`` (reason
redis) to pending; Redis coming back without its data is a stream reset, which brings
``HealthfsmStreamReset`` to firing while ``HealthfsmNoActiveWorker`` stays quiet. The test
waits for states, with generous outer timeouts; it never times a window.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from consumer.devtools import embedded
from consumer.devtools.embedded import free_port
from statemachine import Status
from store import open_database
from tests.conftest import add_games, xadd_event
from tests.processes import Consume, run_cli, wait_for
from tests.test_deploy_files import dashboard_expressions

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "healthfsm-rules.yaml"
LABEL = "health_events"


def prometheus_binary() -> Path:
    """Prometheus beside the promtool that ``scripts/promtool.sh`` unpacks (or finds)."""
    found = subprocess.run(
        [str(ROOT / "scripts" / "promtool.sh")], capture_output=True, text=True, check=False
    )
    assert found.returncode == 0, f"scripts/promtool.sh failed: {found.stderr}"
    return Path(found.stdout.strip()).parent / "prometheus"


class Prometheus:
    """A private Prometheus on a free loopback port, scraping ``targets`` every second."""

    def __init__(self, folder: Path, targets: list[str]) -> None:
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "healthfsm", "static_configs": [{"targets": targets}]}
                    ],
                }
            )
        )
        self.log = (folder / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                str(prometheus_binary()),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, 30, "prometheus ready")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as reply:
            return json.loads(reply.read()) if path.startswith("/api") else reply.status

    def _ready(self) -> bool:
        assert self.process.poll() is None, "prometheus exited"
        try:
            return bool(self._get("/-/ready") == 200)
        except (urllib.error.URLError, ConnectionError):
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._get("/api/v1/query?query=" + urllib.parse.quote(expr))[
            "data"
        ]["result"]
        return found

    def _evaluated_at(self) -> str:
        return str(self._get("/api/v1/rules")["data"]["groups"][0]["lastEvaluation"])

    def next_evaluation(self) -> None:
        """Return once the rules have been evaluated again."""
        before = self._evaluated_at()
        wait_for(lambda: self._evaluated_at() != before, 30, "a rule evaluation")

    def alerts(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, state, labels) of every pending or firing alert."""
        return [
            (a["labels"]["alertname"], a["state"], a["labels"])
            for a in self._get("/api/v1/alerts")["data"]["alerts"]
        ]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def own_redis() -> Iterator[embedded.EmbeddedRedis]:
    server = embedded.start()
    yield server
    server.stop()


def test_a_repartition_is_quiet_an_outage_and_a_reset_each_bring_their_own_alert(
    tmp_path: Path, own_redis: embedded.EmbeddedRedis, db_path: Path
) -> None:
    db = open_database(str(db_path), create=True)
    add_games(db, ("g", Status.RUNNING))
    db.close()
    client = redis.Redis.from_url(own_redis.url)
    xadd_event(client, "g", "container_exited")
    port = free_port()
    worker = Consume(
        tmp_path / "worker.log",
        *("--redis-url", own_redis.url, "--db", str(db_path), "--metrics-port", str(port)),
        *("--block-ms", "100", "--lease-ttl", "2"),
    )
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{port}"])
    seen: list[tuple[str, str, dict[str, str]]] = []
    try:
        wait_for(lambda: client.xlen("gm:lobby_events") >= 1, 30, "the entry applied")
        wait_for(lambda: prometheus.query("healthfsm_ready == 1"), 30, "ready, scraped")
        wait_for(lambda: prometheus.query("healthfsm_worker_info"), 30, "the info metric")
        assert prometheus.alerts() == []
        for expr in dashboard_expressions():  # every panel's query is one Prometheus runs
            concrete = expr.replace("$__rate_interval", "1m").replace("$job", ".*")
            prometheus.query(concrete.replace("$instance", ".*"))

        # a planned re-partition: the worker lets go and takes the new layout; nothing fires
        done = run_cli("partitions", "set", LABEL, "4", "--yes", "--db", str(db_path))
        assert done.returncode == 0, done.stderr

        def retaken() -> bool:
            seen.extend(prometheus.alerts())
            return bool(prometheus.query("healthfsm_partitions_held == 4"))

        wait_for(retaken, 30, "the new layout taken, scraped")
        for _ in range(10):  # ten more evaluations of every rule, watched one by one
            prometheus.next_evaluation()
            seen.extend(prometheus.alerts())
        assert seen == [], seen

        # Redis away: its own alert, with the label and the reason
        own_redis._terminate()
        outage = time.monotonic()

        def not_ready() -> bool:
            return any(
                name == "HealthfsmNotReady"
                and labels.get("reason") == "redis"
                and labels.get("label") == LABEL
                for name, _, labels in prometheus.alerts()
            )

        wait_for(not_ready, 60, "HealthfsmNotReady pending for the outage")
        print(f"alerts: HealthfsmNotReady pending {time.monotonic() - outage:.1f}s after Redis")

        # Redis back without its data: the stream is gone under the offset, a reset
        own_redis.restart()
        reset = time.monotonic()

        def reset_firing() -> bool:
            return any(
                name == "HealthfsmStreamReset" and state == "firing" and labels["label"] == LABEL
                for name, state, labels in prometheus.alerts()
            )

        wait_for(reset_firing, 60, "HealthfsmStreamReset firing")
        print(f"alerts: HealthfsmStreamReset firing {time.monotonic() - reset:.1f}s after")
        names = {name for name, _, _ in prometheus.alerts()}
        assert "HealthfsmNoActiveWorker" not in names  # a reset, not a missing worker
        assert worker.process.poll() is None  # up, failed, until an operator acts
    finally:
        prometheus.stop()
        client.close()
        worker.stop()


def test_a_worker_killed_on_one_label_pages_for_that_label_alone(
    tmp_path: Path, redis_url: str, db_path: Path
) -> None:
    """Two labels, one worker each; the second's is killed: its label is the one named."""
    db = open_database(str(db_path), create=True)
    add_games(db, ("g", Status.RUNNING))
    db.close()
    ports = {label: free_port() for label in ("blue", "green")}
    workers = {
        label: Consume(
            tmp_path / f"{label}.log",
            *("--redis-url", redis_url, "--db", str(db_path), "--label", label),
            *("--metrics-port", str(port), "--block-ms", "100", "--start-from", "beginning"),
        )
        for label, port in ports.items()
    }
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{port}" for port in ports.values()])
    try:
        wait_for(lambda: len(prometheus.query("healthfsm_lease_held == 1")) == 2, 30, "both")
        workers["green"].process.kill()
        workers["green"].wait()
        killed = time.monotonic()

        def green_missing() -> bool:
            return any(
                name == "HealthfsmNoActiveWorker" and labels.get("label") == "green"
                for name, _, labels in prometheus.alerts()
            )

        wait_for(green_missing, 120, "HealthfsmNoActiveWorker pending for green")
        print(f"alerts: HealthfsmNoActiveWorker pending {time.monotonic() - killed:.1f}s after")
        labels = {labels.get("label") for name, _, labels in prometheus.alerts()}
        assert "blue" not in labels
    finally:
        prometheus.stop()
        for worker in workers.values():
            worker.stop()


def test_three_short_redis_outages_are_flapping_and_a_wedged_loop_is_stuck(
    tmp_path: Path, own_redis: embedded.EmbeddedRedis, db_path: Path
) -> None:
    """Redis stopped and started again (with its data: no reset) three times brings
    HealthfsmRedisFlapping to firing; then the loop wedged inside a call (the test hook
    hangs it after a commit) brings HealthfsmLoopStuck to pending."""
    db = open_database(str(db_path), create=True)
    add_games(db, ("g", Status.RUNNING))
    db.close()
    client = redis.Redis.from_url(own_redis.url)
    port = free_port()
    worker = Consume(
        tmp_path / "worker.log",
        *("--redis-url", own_redis.url, "--db", str(db_path), "--metrics-port", str(port)),
        *("--block-ms", "100", "--lease-ttl", "2"),
        env={"HEALTHFSM_TEST_HOOKS": "1", "HEALTHFSM_INJECT_FAULT": "after_commit:1:hang"},
    )
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{port}"])
    try:
        wait_for(lambda: prometheus.query("healthfsm_ready == 1"), 30, "ready, scraped")
        for _ in range(3):
            saved = tmp_path / "dump.rdb"  # beside the server's folder: restart copies it in
            shutil.copyfile(own_redis.save(), saved)
            own_redis._terminate()
            wait_for(
                lambda: prometheus.query('healthfsm_readiness{reason="redis"} == 1'),
                60,
                "the outage scraped",
            )
            own_redis.restart(preload=saved)  # back with its data: an outage, not a reset
            wait_for(lambda: prometheus.query("healthfsm_ready == 1"), 60, "ready again")

        def flapping() -> bool:
            return any(
                name == "HealthfsmRedisFlapping" and state == "firing" and labels["label"] == LABEL
                for name, state, labels in prometheus.alerts()
            )

        wait_for(flapping, 60, "HealthfsmRedisFlapping firing")

        client.close()
        client = redis.Redis.from_url(own_redis.url)
        xadd_event(client, "g", "container_exited")  # the loop hangs after this commit
        wedged = time.monotonic()

        def stuck() -> bool:
            return any(
                name == "HealthfsmLoopStuck" and labels["label"] == LABEL
                for name, _, labels in prometheus.alerts()
            )

        wait_for(stuck, 90, "HealthfsmLoopStuck pending")
        print(f"alerts: HealthfsmLoopStuck pending {time.monotonic() - wedged:.1f}s after")
    finally:
        prometheus.stop()
        client.close()
        worker.process.kill()
        worker.wait()
