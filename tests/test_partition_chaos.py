"""The crash bar for shared labels: real workers, killed, started, paused and re-partitioned.

Three or four ``healthfsm consume`` processes share one stream by partition while a
producer writes 50,500 entries over 300 games (1% of them rejected). At seeded random
moments one worker is killed with SIGKILL, another started, one paused with SIGSTOP past
the lease TTL and resumed, and the partition count raised from 6 to 8 and lowered to 4.
At the end the store and the lobby stream must be what the reference model
(``tests/model.py``) says one worker makes of the same entries.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from statemachine import Status
from store import Store, open_database, outbox, partitions, records
from store.stream_id import entry_id_key
from tests.conftest import add_games
from tests.model import Model, ModelRecord
from tests.processes import Consume, run_cli, wait_for
from tests.streams import entries, newest_id

pytestmark = pytest.mark.backends("sqlite", "postgres")

STREAM = "runtime:health_events"
LOBBY = "gm:lobby_events"
LABEL = "health_events"
GAMES = 300
EVENTS = 50_000
REJECTED_EVERY = 100
TTL_S = 2.0
KINDS = ["container_started", "probe_failed", "container_exited", "probe_recovered"]


def _produce(client: redis.Redis, rng: random.Random, done: threading.Event) -> None:
    """Write the entries in chunks while the workers run: 1 in 100 is rejected (no
    game_id, an unknown event type, or a game with no record)."""
    written = 0
    while written < EVENTS + EVENTS // REJECTED_EVERY:
        pipe = client.pipeline(transaction=False)
        for _ in range(500):
            written += 1
            fields = {
                "game_id": f"g{rng.randrange(GAMES)}",
                "event_type": rng.choice(KINDS),
                "occurred_at_ms": "1",
            }
            if written % REJECTED_EVERY == 0:
                broken = rng.randrange(3)
                if broken == 0:
                    del fields["game_id"]
                elif broken == 1:
                    fields["event_type"] = "container_teleported"
                else:
                    fields["game_id"] = f"ghost{rng.randrange(50)}"
            pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
        pipe.execute()
        time.sleep(0.08)
    done.set()


def _model(client: redis.Redis) -> Model:
    """What the contract says one worker makes of the stream as it is now."""
    model = Model(records={f"g{i}": ModelRecord(Status.RUNNING.value) for i in range(GAMES)})
    for raw_id, fields in entries(client, STREAM):
        text = {k.decode(): v.decode() for k, v in fields.items()}
        model.health(raw_id.decode(), text.get("game_id"), text.get("event_type"))
    return model


def _live_holders(db: Store) -> set[str]:
    now = int(time.time() * 1000)
    rows = db.conn.execute(
        "SELECT holder FROM partition_leases WHERE label = ? AND expires_at_ms > ?",
        [LABEL, now],
    ).fetchall()
    return {str(row[0]) for row in rows if row[0]}


def test_workers_killed_started_paused_and_repartitioned_lose_and_repeat_nothing(
    redis_url: str,
    rclient: redis.Redis,
    db_location: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    rng = random.Random(1717)
    db = open_database(db_location, create=True)
    request.addfinalizer(db.close)  # closed whatever the outcome
    add_games(db, *[(f"g{i}", Status.RUNNING) for i in range(GAMES)])

    def repartition(count: int, paused: Consume | None = None) -> None:
        """``partitions set``, as an operator runs it: on SQLite a worker paused inside its
        batch's transaction keeps the file's write lock (docs/operations.md), so a refusal
        for a locked database is retried, once the paused worker is resumed."""
        for _ in range(5):
            done = run_cli("partitions", "set", LABEL, str(count), "--yes", "--db", db_location)
            if done.returncode == 0:
                return
            assert "locked" in done.stderr, done.stderr
            if paused is not None:
                paused.signal(signal.SIGCONT)
        raise AssertionError(f"partitions set {count} was refused five times: {done.stderr}")

    repartition(6)
    args = [
        "--redis-url",
        redis_url,
        "--db",
        db_location,
        "--lease-ttl",
        str(TTL_S),
        "--block-ms",
        "100",
        "--batch-size",
        "200",
    ]
    started = 0

    def start() -> Consume:
        nonlocal started
        started += 1
        return Consume(tmp_path / f"worker{started}.log", *args)

    workers = [start() for _ in range(3)]
    produced = threading.Event()
    producer = threading.Thread(target=_produce, args=(rclient, rng, produced))
    most_at_once = 0
    disruptions: list[int] = []

    def disrupted() -> None:
        """A kill, a pause, a resume or a re-partition happened now (wall ms)."""
        disruptions.append(int(time.time() * 1000))

    def watch(seconds: float) -> None:
        nonlocal most_at_once
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            most_at_once = max(most_at_once, len(_live_holders(db)))
            time.sleep(0.05)

    producer.start()
    try:
        watch(rng.uniform(1.0, 2.0))
        victim = workers.pop(rng.randrange(len(workers)))
        victim.signal(signal.SIGKILL)
        victim.wait()
        disrupted()
        watch(rng.uniform(0.5, 1.5))
        workers.append(start())
        watch(rng.uniform(1.0, 2.0))
        # paused past the TTL, and re-partitioned while its partitions lag behind: the new
        # partitions start at their offsets and re-read what the others applied since
        paused = workers[rng.randrange(len(workers))]
        paused.signal(signal.SIGSTOP)
        disrupted()
        watch(rng.uniform(0.5, 1.0))
        repartition(8, paused)
        disrupted()
        watch(TTL_S + rng.uniform(0.5, 1.0))
        paused.signal(signal.SIGCONT)
        disrupted()
        watch(rng.uniform(1.0, 2.0))
        workers.append(start())
        watch(rng.uniform(0.5, 1.5))
        paused = workers[rng.randrange(len(workers))]
        paused.signal(signal.SIGSTOP)
        disrupted()
        watch(rng.uniform(0.3, 0.8))
        repartition(4, paused)
        disrupted()
        paused.signal(signal.SIGCONT)
        disrupted()
        watch(rng.uniform(1.0, 2.0))
        victim = workers.pop(rng.randrange(len(workers)))
        victim.signal(signal.SIGKILL)
        victim.wait()
        disrupted()
        producer.join(120)
        assert produced.is_set()
        last = newest_id(rclient, STREAM)

        def settled() -> bool:
            stored = partitions.load_offsets(db.conn, LABEL)
            return (
                len(stored) == 4
                and {o.entry_id for o in stored.values()} == {last}
                and outbox.pending(db.conn) == 0
            )

        wait_for(settled, 120, "every partition at the last entry, the outbox empty")
    finally:
        producer.join(120)
        codes = [worker.stop() for worker in workers]
    logs = "".join(worker.stderr() for worker in workers)
    assert codes == [0] * len(workers), logs[-3000:]
    assert "Traceback" not in logs

    model = _model(rclient)
    got = {r.game_id: (r.state.value, r.engine_health) for r in records.iter_all(db.conn)}
    assert got == {g: (r.status, r.engine_health) for g, r in model.records.items()}

    _assert_lobby_is_the_models(rclient, model, disruptions, most_at_once, tmp_path)

    dead = [str(row[0]) for row in db.conn.execute("SELECT entry_id FROM dead_letters")]
    assert sorted(dead) == sorted(entry_id for entry_id, _ in model.dead), "one each"
    assert len(model.dead) == (EVENTS + EVENTS // REJECTED_EVERY) // REJECTED_EVERY

    assert {o.entry_id for o in partitions.load_offsets(db.conn, LABEL).values()} == {last}
    assert most_at_once >= 2, "at least two workers held partitions at the same time"
    db.close()


def _assert_lobby_is_the_models(
    rclient: redis.Redis,
    model: Model,
    disruptions: list[int],
    most_at_once: int,
    kept: Path,
) -> None:
    """Each game's snapshots, deduplicated, in the model's order; and what the publish
    fence promises, read from the data alone (no wall-clock window): a repeat is the same
    snapshot right after its first copy among the game's, never one after a newer one."""
    sent = entries(rclient, LOBBY)
    order: dict[str, list[str]] = {}
    copies: dict[str, int] = {}
    behind: list[str] = []
    last: dict[str, str] = {}
    for _, fields in sent:
        game, source = fields[b"game_id"].decode(), fields[b"source_entry_id"].decode()
        if source not in copies:
            order.setdefault(game, []).append(source)
        copies[source] = copies.get(source, 0) + 1
        before = last.get(game)
        if before is not None and entry_id_key(source) < entry_id_key(before):
            behind.append(f"{game}: {source} after {before}")
        last[game] = source
    expected: dict[str, list[str]] = {}
    for snapshot in model.snapshots:
        expected.setdefault(snapshot["game_id"], []).append(snapshot["source_entry_id"])
    if order != expected:  # what a failure needs to be explained, beside the workers' logs
        _keep(
            kept / "lobby.txt",
            [
                f"{i.decode()} {f[b'game_id'].decode()} {f[b'source_entry_id'].decode()}"
                for i, f in sent
            ],
        )
        _keep(
            kept / "model.txt", [f"{s['game_id']} {s['source_entry_id']}" for s in model.snapshots]
        )
        _keep(kept / "disruptions.txt", [str(ms) for ms in disruptions])
        # a short message: the full diff of 300 games' lists would push it out of a CI log
        pytest.fail(_differences(order, expected), pytrace=False)
    repeated = [source for source, count in copies.items() if count > 1]
    print(
        f"chaos: {len(sent)} snapshots published, {len(repeated)} repeated,"
        f" {len(disruptions)} disruptions, {most_at_once} holders at once at most"
    )
    assert behind == [], f"{len(behind)} snapshots after a newer one: {behind[:10]}"


def _keep(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _differences(got: dict[str, list[str]], expected: dict[str, list[str]]) -> str:
    """Where each game's snapshots on the lobby stream differ from the model's: what is
    missing, what is extra, and where the order first departs (with its neighbours)."""
    lines = ["each game's snapshots, deduplicated, in the model's order; differences:"]
    for game in sorted(set(got) | set(expected)):
        have, want = got.get(game, []), expected.get(game, [])
        if have == want:
            continue
        missing = [source for source in want if source not in set(have)]
        extra = [source for source in have if source not in set(want)]
        pairs = enumerate(zip(have, want, strict=False))
        first = next((i for i, (one, other) in pairs if one != other), None)
        lines.append(
            f"{game}: {len(have)} published, {len(want)} in the model; missing {missing[:5]},"
            f" extra {extra[:5]}, first departure at {first}:"
            f" published {have[max(0, (first or 0) - 2) : (first or 0) + 3]},"
            f" model {want[max(0, (first or 0) - 2) : (first or 0) + 3]}"
        )
    return "\n".join(lines[:12])
