"""A planned change of ownership is not a failure: ``partitions set`` on a running worker.

A real ``healthfsm consume`` with its metrics endpoint, re-partitioned through the real
CLI while it works: its log has INFO lines only (the old and new count, the partitions it
takes), ``healthfsm_lease_lost_total`` stays 0 (it pages nobody), and the change counts in
``healthfsm_rebalances_total``. A pause past the TTL stays a lost lease (test_lease).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.devtools.embedded import free_port
from statemachine import Status
from store import Store, offsets
from tests.conftest import add_games, seed_flips
from tests.processes import Consume, run_cli, wait_for
from tests.test_log_output import metric, scrape

pytestmark = pytest.mark.backends("sqlite", "postgres")

LABEL = "health_events"
GAMES = 40


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Consume]]:
    """Workers the test starts, stopped whatever its outcome."""
    workers: list[Consume] = []
    yield workers
    for worker in workers:
        worker.stop()


def test_repartitioning_a_running_worker_logs_info_and_loses_no_lease(
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    tmp_path: Path,
    started: list[Consume],
) -> None:
    add_games(db, *((f"g{i}", Status.RUNNING) for i in range(GAMES)))
    last = seed_flips(rclient, GAMES, 400)
    port = free_port()
    worker = Consume(
        tmp_path / "worker.log",
        *("--redis-url", redis_url, "--db", db_location, "--block-ms", "100"),
        *("--lease-ttl", "3", "--metrics-port", str(port)),
    )
    started.append(worker)
    wait_for(lambda: offsets.load(db.conn, LABEL) == last, what="the first backlog applied")

    changed = run_cli("partitions", "set", LABEL, "4", "--yes", "--db", db_location)
    assert changed.returncode == 0, changed.stderr
    last = seed_flips(rclient, GAMES, 400)
    wait_for(
        lambda: offsets.load(db.conn, LABEL) == last,
        timeout_s=60,
        what="every partition taken again and at the last entry",
    )
    text = scrape(port)
    assert metric(text, "healthfsm_lease_lost_total") == 0
    assert metric(text, 'healthfsm_rebalances_total{change="repartitioned"}') == 1
    assert metric(text, 'healthfsm_rebalances_total{change="taken"}') == 1 + 4
    assert metric(text, 'healthfsm_rebalances_total{change="taken_over"}') == 0
    assert metric(text, "healthfsm_partitions_held") == 4
    assert worker.stop() == 0

    log = worker.stderr()
    levels = set(re.findall(r" (DEBUG|INFO|WARNING|ERROR|CRITICAL) ", log))
    assert levels == {"INFO"}, log
    assert f"label {LABEL!r} was re-partitioned from 1 to 4 partitions" in log, log
    for partition in range(4):
        assert f"holding the lease of partition {partition} of 4 of label" in log, log
