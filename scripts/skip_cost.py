"""What a worker pays for an entry it does not apply, against what it pays for one it does.

Partitioned consumption (issue 17) has every worker read the whole stream and apply only
its partitions' entries, so each entry it skips costs a read, a look at ``game_id`` and a
partition lookup. This measures, in one run and alternating rounds on one stream:

- apply: the real worker draining the stream into a fresh SQLite store (today's cost);
- read: the worker's own range reads over the same stream, nothing else;
- skip: those reads plus, per entry, ``game_id`` and its partition (cached per game, as a
  worker would), compared with a held set that holds nothing;
- raw skip: the same on the reply as hiredis parses it (each entry's fields a flat list),
  without redis-py's XRANGE callback, which builds a dict per entry in Python.

Run: ``HEALTHFSM_REDIS_SERVER=bundled .venv/bin/python scripts/skip_cost.py [EVENTS] [ROUNDS]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from consumer.contract.partitions import partition_of
from consumer.devtools import embedded
from consumer.devtools.bench import fresh_database, seed_stream, timed_drain, workload
from consumer.runtime.redis_client import read_range

STREAM = "skip:health_events"
LOBBY = "skip:lobby_events"
GAMES = 1000
BATCH = 2000


def game_of(fields: object) -> bytes:
    """``game_id`` from an entry's fields: a dict (redis-py's callback) or a flat list."""
    if isinstance(fields, dict):
        return bytes(fields.get(b"game_id", b""))
    assert isinstance(fields, list)
    for key in range(0, len(fields) - 1, 2):
        if fields[key] == b"game_id":
            return bytes(fields[key + 1])
    return b""


def read_all(client: redis.Redis, *, skip: bool, partitions: int = 8) -> tuple[float, float]:
    """Wall and CPU seconds of this process to read the whole stream in batches (and, with
    ``skip``, to classify each entry by partition and skip it)."""
    held: set[int] = set()
    partition: dict[bytes, int] = {}
    after, applied = "0-0", 0
    started, cpu = time.perf_counter(), time.process_time()
    while True:
        fresh, _ = read_range(client, STREAM, after, BATCH)
        if not fresh:
            break
        if skip:
            for _, fields in fresh:
                game = game_of(fields)
                p = partition.get(game)
                if p is None:
                    p = partition[game] = partition_of(game, partitions)
                if p in held:
                    applied += 1
        after = fresh[-1][0].decode()
    assert applied == 0
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> int:
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    with embedded.running() as server, tempfile.TemporaryDirectory() as scratch:
        client = redis.Redis.from_url(server.url)
        seed_stream(client, STREAM, workload(events, GAMES, seed=1))
        raw = redis.Redis.from_url(server.url)
        raw.set_response_callback("XRANGE", lambda reply, **_: reply)
        results: dict[str, list[tuple[float, float]]] = {
            "apply": [],
            "read": [],
            "skip": [],
            "raw": [],
        }
        for n in range(rounds):
            path = str(Path(scratch) / f"apply-{n}.db")
            fresh_database(path, GAMES)
            cpu = time.process_time()
            seconds, _ = timed_drain(server.url, STREAM, LOBBY, path, BATCH)
            results["apply"].append((seconds, time.process_time() - cpu))
            client.delete(LOBBY)
            results["read"].append(read_all(client, skip=False))
            results["skip"].append(read_all(client, skip=True))
            results["raw"].append(read_all(raw, skip=True))
        client.close()
        raw.close()
    print(f"{events} events over {GAMES} games, batch {BATCH}, median of {rounds} rounds")
    print("                              wall us/entry      worker CPU us/entry")
    base = [statistics.median(r[i] for r in results["apply"]) / events * 1e6 for i in (0, 1)]
    for name, shown in (
        ("apply (the worker, SQLite)", "apply"),
        ("read only", "read"),
        ("read + classify + skip", "skip"),
        ("raw reply + classify + skip", "raw"),
    ):
        wall, cpu = (statistics.median(r[i] for r in results[shown]) / events * 1e6 for i in (0, 1))
        print(
            f"{name:28}  {wall:6.2f} ({wall / base[0]:4.0%})      {cpu:6.2f} ({cpu / base[1]:4.0%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
