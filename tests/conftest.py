"""Shared fixtures: one real redis-server per session (flushed per test), real SQLite files."""

from __future__ import annotations

import gc
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, Phase, settings

from consumer.devtools import embedded
from consumer.runtime import faults
from consumer.runtime.metrics import Metrics
from consumer.runtime.status import BatchObserver
from consumer.runtime.worker import Worker
from consumer.settings import ConsumerSettings
from statemachine import Status
from store import Store, open_database
from store.admin import add_game
from tests import edges, pg
from tests import pg_server as embedded_pg
from tests.streams import as_id, entries, newest_id

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(  # scripts/mutations.py: a failing example is enough, no shrinking
    "mutation",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FIXED_NOW_MS = 1_700_000_000_000


def _folders_above(path: Path) -> list[Path]:
    return [path, *path.parents]


PARENT_MODES_AT_START = {
    folder: folder.stat().st_mode
    for start in (
        Path(__file__).resolve().parent,
        Path(sys.prefix),
        Path(tempfile.gettempdir()),
        embedded_pg._bin_dir(),
    )
    for folder in _folders_above(start)
}
"""The checkout's, the venv's and the temp folder's parents as the run found them:
``test_embedded_servers`` checks that starting the test servers changed none of them."""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[embedded.EmbeddedRedis]:
    """A private redis-server on a free loopback port for the whole session."""
    server = embedded.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: embedded.EmbeddedRedis) -> str:
    """The server's URL, with every key flushed before the test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    """A bytes client on the flushed server."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A fresh database file path."""
    return tmp_path / "healthfsm.db"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``backend`` takes each name of the closest ``backends`` marker (a module says
    ``pytestmark = pytest.mark.backends("sqlite", "postgres")``); ``sqlite_only`` or no
    marker gives ``sqlite`` alone."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = list(marker.args) if marker is not None else ["sqlite"]
    if metafunc.definition.get_closest_marker("sqlite_only") is not None:
        names = ["sqlite"]
    unknown = set(names) - {"sqlite", "postgres"}
    if unknown or not names:
        raise pytest.UsageError(f"backends marker names unknown backends: {sorted(unknown)}")
    metafunc.parametrize("backend", names)


@pytest.fixture
def db_location(backend: str, db_path: Path) -> str:
    """What ``--db`` gets: a fresh SQLite file, or a URL to a fresh PostgreSQL schema."""
    if backend == "postgres":
        return pg.new_schema_url()
    return str(db_path)


@pytest.fixture
def db(db_location: str) -> Iterator[Store]:
    """An opened, migrated store on the test's backend."""
    database = open_database(db_location, create=True)
    yield database
    database.close()


@pytest.fixture(autouse=True, scope="session")
def _note_every_worker_built() -> Iterator[None]:
    """A ``Worker`` built anywhere (a thread, a fixture, a test) is the real worker: its
    test's stores count for the end-to-end edge coverage (tests/edges.py)."""
    built = Worker.__init__

    def noting(self: Worker, *args: Any, **kwargs: Any) -> None:
        edges.drove_the_real_worker()
        built(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Worker, "__init__", noting)
        yield


@pytest.fixture(autouse=True)
def measure_the_edges_driven(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that drove the real worker or CLI (first in, so last out: its workers
    are stopped and stores closed by then), add its stores' edge counts to tests/edges.py."""
    folder = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    schemas = len(pg.CREATED)
    yield
    if not edges.take_flag():
        return
    if folder is not None:
        edges.harvest_sqlite(folder)
    if len(pg.CREATED) > schemas:
        edges.harvest_postgres(pg.server().url(), pg.CREATED[schemas:])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``after_all`` run last (the edge coverage reads what the others drove);
    whether this run is the whole suite decides if that coverage is judged."""
    last = [item for item in items if item.get_closest_marker("after_all")]
    items[:] = [item for item in items if not item.get_closest_marker("after_all")] + last
    every = {path.name for path in Path(__file__).parent.glob("test_*.py")}
    collected = {item.path.name for item in items}
    edges.FULL_SUITE = (
        collected >= every and not config.option.keyword and not config.option.markexpr
    )


@pytest.fixture(autouse=True)
def _no_armed_faults() -> Iterator[None]:
    faults.disarm_all()
    yield
    faults.disarm_all()


@pytest.fixture(autouse=True)
def collect_what_the_test_left() -> Iterator[None]:
    """Collect garbage as each test ends: a connection a test forgot to close warns
    (``ResourceWarning``, an error here) in the test that forgot it, not in whichever test
    the collector happens to run in later."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def stop_the_workers_a_test_left() -> Iterator[None]:
    """Every ``consume`` process a test started is stopped when it ends, pass or fail."""
    from tests.processes import Consume

    yield
    Consume.stop_all()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI commands configure the root logger; leave it as pytest set it up."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def add_games(db: Store, *games: tuple[str, Status]) -> None:
    """Register games at the fixed test time."""
    for game_id, status in games:
        add_game(db, game_id, status, 0, FIXED_NOW_MS)


def xadd_event(
    client: redis.Redis,
    game_id: str,
    event_type: str,
    occurred_at_ms: str = "1",
    stream: str = "runtime:health_events",
    entry_id: str = "*",
) -> str:
    """Write one health event; return its id."""
    added = client.xadd(
        stream,
        {"game_id": game_id, "event_type": event_type, "occurred_at_ms": occurred_at_ms},
        id=entry_id,
    )
    return as_id(added)


def seed_flips(client: redis.Redis, games: int, count: int) -> str:
    """``count`` events over games ``g0..``: each round of games flips between
    ``container_started`` and ``probe_failed`` (a snapshot each); return the last id."""
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        kind = ("container_started", "probe_failed")[(i // games) % 2]
        pipe.xadd(
            "runtime:health_events",
            {"game_id": f"g{i % games}", "event_type": kind, "occurred_at_ms": "1"},
        )
    pipe.execute()
    return newest_id(client, "runtime:health_events")


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def make_worker(redis_url: str, db: Store, db_location: str) -> Iterator[WorkerFactory]:
    """Build drain-mode workers on the test database; closed on teardown."""
    made: list[Worker] = []

    def build(
        database: Store | None = None,
        observers: Sequence[BatchObserver] = (),
        metrics: Metrics | None = None,
        **overrides: object,
    ) -> Worker:
        """``observers`` are called after each committed batch, ``metrics`` counts (a fresh
        registry by default); ``overrides`` are settings."""
        options: dict[str, object] = {
            "redis_url": redis_url,
            "db_path": db_location,
            "drain": True,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
        }
        options.update(overrides)
        worker = Worker(
            ConsumerSettings.model_validate(options),
            database or db,
            clock=lambda: FIXED_NOW_MS,
            observers=observers,
            metrics=metrics,
        )
        made.append(worker)
        return worker

    yield build
    for worker in made:
        worker.close()


def published(client: redis.Redis, stream: str = "gm:lobby_events") -> list[dict[str, str]]:
    """Every entry on ``stream`` as a dict of strings."""
    return [
        {k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries(client, stream)
    ]


def pytest_sessionfinish(session: pytest.Session) -> None:
    """``HEALTHFSM_EDGE_REPORT=FILE`` writes each edge's end-to-end count there as JSON (the
    table in docs/testing.md)."""
    report = os.environ.get("HEALTHFSM_EDGE_REPORT")
    if report:
        from statemachine.edges import ALL_EDGES

        rows = [{**edge._asdict(), "count": edges.DRIVEN[edge]} for edge in ALL_EDGES]
        Path(report).write_text(json.dumps(rows, indent=1) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Report the state machine's transition coverage from the exhaustive walk, and the
    edges the end-to-end tests drove (tests/edges.py)."""
    from statemachine.edges import ALL_EDGES
    from tests.test_definition import COVERAGE

    if edges.DRIVEN:
        driven = sum(1 for edge in ALL_EDGES if edges.DRIVEN[edge])
        scope = "the whole suite" if edges.FULL_SUITE else "this partial run"
        terminalreporter.write_line(
            f"end-to-end edge coverage: {driven}/{len(ALL_EDGES)} edges of the table driven"
            f" through the real worker and CLI in {scope}"
            f" ({sum(edges.DRIVEN.values()):,} events and changes counted by their stores)"
        )

    if "cells" in COVERAGE:
        walked, total = COVERAGE["cells"]
        fired, transitions = COVERAGE["transitions"]
        terminalreporter.write_line(
            f"state machine coverage: {walked}/{total} (status x event type, admin from x to)"
            f" pairs checked against the model ({100 * walked / total:.0f}%);"
            f" {fired}/{transitions} machine transitions fired; the other"
            f" {transitions - fired} are guarded changes declared from a status their guard"
            " refuses, and fallbacks in the status where the CAS applies instead"
        )
