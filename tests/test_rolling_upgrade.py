"""A rolling deploy across schema version 5: the previous release's worker meets the migration.

docs/operations.md has the old and the new release run side by side during a deploy. The
previous release (commit ``PREVIOUS_RELEASE``, extracted from git and run from its own tree
with the same interpreter, its packages shadowing the editable install) writes ``leases``,
which version 5 turns into a read-only view. Its worker that is active while the new
release migrates the store must never become active again nor hold a lease beside a new
worker; one started after the migration must refuse the newer schema in one line. Every
event is applied once, as one worker would apply it (``tests.model``), on both backends.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from store import SCHEMA_VERSION, Store, offsets, open_database
from tests.conftest import published
from tests.model import EVENT_TYPES, Model, ModelRecord
from tests.processes import HEALTHFSM, Consume, run_cli, wait_for
from tests.streams import entries, newest_id

pytestmark = pytest.mark.backends("sqlite", "postgres")

ROOT = Path(__file__).resolve().parent.parent
PREVIOUS_RELEASE = "613203a"
"""The last commit before schema version 5 (no release is tagged yet): its workers write the
``leases`` table directly."""

STREAM = "runtime:health_events"
LABEL = "health_events"
GAMES = 20
ROUND = 400
"""Entries added before the migration, and again after it."""


@pytest.fixture(scope="session")
def previous_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's packages in a folder of their own, extracted once per session."""
    tree = tmp_path_factory.mktemp("previous-release")
    command = ["git", "-C", str(ROOT), "archive", PREVIOUS_RELEASE, "consumer", "statemachine"]
    try:
        archive = subprocess.run([*command, "store"], capture_output=True, timeout=120)
    except FileNotFoundError:
        pytest.fail("the rolling-upgrade test needs git to extract the previous release")
    if archive.returncode != 0:
        pytest.fail(
            f"cannot extract the previous release {PREVIOUS_RELEASE} from git in {ROOT}"
            f" ({archive.stderr.decode().strip()}): run the test in a full clone, or set"
            " GIT_DIR to one's .git folder"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    assert (tree / "consumer/runtime/lease_keeper.py").is_file()  # the old lease code
    return tree


def old_env(tree: Path) -> dict[str, str]:
    """The environment that makes ``tree``'s packages shadow the editable install."""
    return {**os.environ, "PYTHONPATH": str(tree)}


class OldConsume(Consume):
    """A ``healthfsm consume`` of the previous release: ``Consume`` run from its tree."""

    def __init__(self, log: Path, tree: Path, *args: str) -> None:
        self.log = log
        self._err = log.open("w")
        self.process = subprocess.Popen(
            [*HEALTHFSM, "consume", *args],
            cwd=tree,
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            env=old_env(tree),
        )


@pytest.fixture
def started() -> Iterator[list[Consume]]:
    """Every worker the test starts, stopped whatever its outcome."""
    workers: list[Consume] = []
    yield workers
    for worker in workers:
        worker.stop()


OLD_SEED = """
import json, sys
import store
from statemachine import Status
from store.admin import add_game
db = store.open_database(sys.argv[1], create=True)
for i in range(int(sys.argv[2])):
    add_game(db, f"g{i}", Status.RUNNING, 0, 1)
db.close()
print(json.dumps({"file": store.__file__, "version": store.SCHEMA_VERSION}))
"""
"""Creates the store and registers the games with the previous release's own store code (one
process: ``runtime add`` costs a second a game); prints which code ran."""


def seed_with_old_release(tree: Path, db_location: str) -> int:
    """Create the store with the previous release; its schema version, checked to be older."""
    run = subprocess.run(
        [sys.executable, "-c", OLD_SEED, db_location, str(GAMES)],
        cwd=tree,
        env=old_env(tree),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    ran = json.loads(run.stdout)
    assert Path(ran["file"]).is_relative_to(tree), ran  # the old code, not the editable install
    assert ran["version"] < SCHEMA_VERSION, ran
    return int(ran["version"])


def add_events(client: redis.Redis, start: int) -> str:
    """``ROUND`` events over games ``g0..``, every event type, status changes included."""
    pipe = client.pipeline(transaction=False)
    for i in range(start, start + ROUND):
        kind = EVENT_TYPES[(3 * i + i // GAMES) % len(EVENT_TYPES)]
        pipe.xadd(STREAM, {"game_id": f"g{i % GAMES}", "event_type": kind, "occurred_at_ms": "1"})
    pipe.execute()
    return newest_id(client, STREAM)


def raw_rows(db_location: str, query: str) -> list[tuple[Any, ...]]:
    """A plain query on either backend: the new store API would migrate an old store."""
    if "://" in db_location:
        with psycopg.connect(db_location, autocommit=True) as conn:
            return conn.execute(query).fetchall()
    lite = sqlite3.connect(db_location, timeout=30)
    try:
        return lite.execute(query).fetchall()
    finally:
        lite.close()


def applied_through(db_location: str, entry_id: str) -> bool:
    """Whether the label's offset is ``entry_id`` and every snapshot left the outbox."""
    offset = raw_rows(db_location, f"SELECT entry_id FROM stream_offsets WHERE label = '{LABEL}'")
    pending = raw_rows(db_location, "SELECT count(*) FROM outbox")
    return offset == [(entry_id,)] and pending == [(0,)]


def single_worker_model(client: redis.Redis) -> Model:
    """What one worker makes of the whole stream, from the independent model."""
    model = Model(records={f"g{i}": ModelRecord("running") for i in range(GAMES)})
    for entry_id, fields in entries(client, STREAM):
        model.health(entry_id.decode(), fields[b"game_id"].decode(), fields[b"event_type"].decode())
    return model


def done_or_standing_by(worker: Consume) -> bool:
    """Whether the old worker exited or stands by (it was active from its start until then)."""
    return worker.process.poll() is not None or "standing by" in worker.stderr()


def test_an_old_worker_running_during_the_migration_never_becomes_active_again(
    previous_release: Path,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    tmp_path: Path,
    started: list[Consume],
) -> None:
    old_version = seed_with_old_release(previous_release, db_location)
    last = add_events(rclient, 0)
    args = ["--redis-url", redis_url, "--db", db_location, "--block-ms", "100", "--lease-ttl", "3"]
    old = OldConsume(tmp_path / "old.log", previous_release, *args)
    started.append(old)
    wait_for(lambda: applied_through(db_location, last), 30, "the old worker applies the backlog")
    assert "holding the lease for label" in old.stderr()

    migrated = run_cli("migrate", "--db", db_location)
    assert migrated.returncode == 0, migrated.stderr
    report = json.loads(migrated.stdout)
    assert (report["from_version"], report["to_version"]) == (old_version, SCHEMA_VERSION)

    new = Consume(tmp_path / "new.log", *args)
    started.append(new)
    late = OldConsume(tmp_path / "late.log", previous_release, *args)
    started.append(late)
    assert late.wait(60) == 1
    refused = late.stderr()
    assert refused.count("\n") == 1 and "newer than this healthfsm understands" in refused, refused

    db = open_database(db_location)
    try:
        last = add_events(rclient, ROUND)
        wait_for(lambda: offsets.load(db.conn, LABEL) == last, 60, "the new worker applies all")
        wait_for(lambda: applied_through(db_location, last), 30, "every snapshot published")
        wait_for(lambda: done_or_standing_by(old), 30, "the old worker, active, exits or stands by")
        assert_only_the_new_worker_holds_the_label(db, db_location, old, new)
        assert offsets.entries_read(db.conn, LABEL) == 2 * ROUND
    finally:
        db.close()
    assert_applied_once_as_one_worker(rclient, db_location)
    assert new.stop() == 0


def assert_only_the_new_worker_holds_the_label(
    db: Store, db_location: str, old: Consume, new: Consume
) -> None:
    """The old worker went (one error line, no traceback) or stands by, named by no live
    lease; the new one holds partition 0 and says so."""
    log = old.stderr()
    assert "Traceback" not in log, log
    assert log.count("holding the lease") == 1 and "took over" not in log, log
    assert f":{old.pid}:" in log  # its holder id, as the lease rows name it
    code = old.process.poll()
    if code is not None:
        errors = [line for line in log.splitlines() if line.startswith("healthfsm: error:")]
        assert code == 1 and errors == [log.splitlines()[-1]], (code, log)
    now_ms = int(time.time() * 1000)
    owners = raw_rows(
        db_location,
        f"SELECT partition, holder, expires_at_ms FROM partition_owners WHERE label = '{LABEL}'",
    )
    assert not [row for row in owners if f":{old.pid}:" in row[1] and row[2] > now_ms], owners
    [(partition, holder, _)] = owners
    assert partition == 0 and f":{new.pid}:" in holder, owners
    view = db.conn.execute("SELECT holder FROM leases").fetchall()
    assert [tuple(row) for row in view] == [(holder,)]  # the view the old release read
    assert re.search(r"(took over|holding) the lease of partition 0 ", new.stderr()), new.stderr()


def assert_applied_once_as_one_worker(rclient: redis.Redis, db_location: str) -> None:
    """The records and the lobby stream are those one worker makes of the whole stream."""
    model = single_worker_model(rclient)
    listed = run_cli("runtime", "list", "--json", "--db", db_location)
    assert listed.returncode == 0, listed.stderr
    records = {
        row["game_id"]: (
            row["status"],
            row["engine_health"],
            row["current_turn"],
            row["last_emitted_summary"],
        )
        for row in json.loads(listed.stdout)
    }
    assert records == {
        game: (r.status, r.engine_health, r.turn, r.last_emitted)
        for game, r in model.records.items()
    }
    keys = ("game_id", "runtime_status", "engine_health_summary", "current_turn", "source_entry_id")
    sent = [{key: snapshot[key] for key in keys} for snapshot in published(rclient)]
    assert sent == model.snapshots  # each once, in order, across the two releases
