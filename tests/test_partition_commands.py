"""The partition commands and what the others show of partitions: ``partitions set|show``,
``offsets show|set`` and ``check``, through the real CLI on both backends."""

from __future__ import annotations

import json
import time

import pytest
import redis

from consumer.contract.partitions import partition_of
from statemachine import Status
from store import Store, offsets, partitions, records
from tests.conftest import WorkerFactory, add_games, seed_flips
from tests.ownership import occupy
from tests.processes import cli_in_process as run_cli
from tests.streams import newest_id

pytestmark = pytest.mark.backends("sqlite", "postgres")

LABEL = "health_events"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["4"], "add --yes"),
        (["0", "--yes"], "N"),
        (["257", "--yes"], "N"),
        (["four", "--yes"], "N"),
    ],
)
def test_partitions_set_refuses_bad_arguments_in_one_line(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str, args: list[str], says: str
) -> None:
    code, out, err = run_cli(capsys, "partitions", "set", LABEL, *args, "--db", db_location)
    assert code == 2 and out == "" and says in err and "Traceback" not in err
    assert partitions.count(db.conn, LABEL) == 1


def test_partitions_set_show_and_the_offsets_of_each(
    capsys: pytest.CaptureFixture[str],
    db: Store,
    db_location: str,
    redis_url: str,
    rclient: redis.Redis,
    make_worker: WorkerFactory,
) -> None:
    add_games(db, *[(f"g{i}", Status.RUNNING) for i in range(20)])
    last = seed_flips(rclient, 20, 100)
    make_worker().run()  # one partition: today's rows
    code, out, _ = run_cli(capsys, "offsets", "show", "--json", "--db", db_location)
    (row,) = json.loads(out)
    assert code == 0 and row["entry_id"] == last
    assert (row["partition"], row["partitions"], row["label"]) == (0, 1, LABEL)

    code, out, _ = run_cli(capsys, "partitions", "set", LABEL, "4", "--yes", "--db", db_location)
    assert code == 0
    assert json.loads(out) == {
        "label": LABEL,
        "partitions": 4,
        "previous": 1,
        "offsets": dict.fromkeys(["0", "1", "2", "3"], last),
        "changed": True,
    }
    epochs = {p: lease.epoch for p, lease in partitions.read_leases(db.conn, LABEL).items()}
    code, out, _ = run_cli(capsys, "partitions", "set", LABEL, "4", "--yes", "--db", db_location)
    assert code == 0 and json.loads(out)["changed"] is False
    assert {p: lease.epoch for p, lease in partitions.read_leases(db.conn, LABEL).items()} == (
        epochs
    ), "the same count again fences nobody"
    code, out, _ = run_cli(
        capsys, "partitions", "show", "--json", "--db", db_location, "--redis-url", redis_url
    )
    shown = json.loads(out)
    assert code == 0 and [r["partition"] for r in shown] == [0, 1, 2, 3]
    assert all(r["entry_id"] == last and r["lag_entries"] == 0 for r in shown)
    assert all(r["holder"] is None and r["epoch"] >= 1 for r in shown)
    code, out, err = run_cli(capsys, "partitions", "show", "--json", "--db", db_location)
    assert code == 0 and err == "", err  # no --redis-url: no connection attempt, no lag
    assert [r["lag_entries"] for r in json.loads(out)] == [None] * 4

    code, out, _ = run_cli(
        capsys, "partitions", "show", "--game", "g7", "--json", "--db", db_location
    )
    assert json.loads(out)["partition"] == partition_of("g7", 4)

    seed_flips(rclient, 20, 40)
    make_worker().run()  # four partitions, one worker: it takes them all, then lets go
    code, out, _ = run_cli(capsys, "offsets", "show", "--json", "--db", db_location)
    rows = json.loads(out)
    new_last = newest_id(rclient, "runtime:health_events")
    assert [(r["partition"], r["partitions"]) for r in rows] == [(p, 4) for p in range(4)]
    assert {r["entry_id"] for r in rows} == {new_last}
    assert {r["entries_read"] for r in rows} == {140}
    assert offsets.load(db.conn, LABEL) == new_last, "stream_offsets: the low-water mark"

    code, out, _ = run_cli(capsys, "offsets", "set", LABEL, last, "--yes", "--db", db_location)
    assert code == 0
    assert {o.entry_id for o in partitions.load_offsets(db.conn, LABEL).values()} == {last}
    marks = {r.last_entry_id for r in records.iter_all(db.conn)}
    assert all(mark is None or mark <= last for mark in marks), "marks past it cleared"


def test_check_names_a_partition_nobody_holds(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str, redis_url: str
) -> None:
    base = ["check", "--redis-url", redis_url, "--db", db_location]
    run_cli(capsys, "partitions", "set", LABEL, "3", "--yes", "--db", db_location)
    code, out, _ = run_cli(capsys, *base)
    assert code == 0 and "3 partitions, 0 held" in out  # just changed: within the TTL
    with db.write() as conn:
        conn.execute(
            "UPDATE label_partitions SET changed_at_ms = ?", [int(time.time() * 1000) - 60_000]
        )
    code, _, err = run_cli(capsys, *base)
    assert code == 1 and err.count("\n") == 1
    assert "partition 0 of label 'health_events' has had no live holder" in err
    assert "(and 2 more)" in err


def test_drain_exits_1_at_once_when_every_partition_is_held(
    capsys: pytest.CaptureFixture[str], db: Store, db_location: str, redis_url: str
) -> None:
    run_cli(capsys, "partitions", "set", LABEL, "2", "--yes", "--db", db_location)
    occupy(db, LABEL, 0, 1)
    started = time.monotonic()
    code, _, err = run_cli(
        capsys, "consume", "--drain", "--redis-url", redis_url, "--db", db_location
    )
    assert code == 1 and time.monotonic() - started < 10
    assert "the 2 partitions of label 'health_events' are held by elsewhere:1:x" in err
    assert "Traceback" not in err
