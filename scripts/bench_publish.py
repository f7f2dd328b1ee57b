"""What Redis spends appending snapshots: the fenced publish script against plain XADDs.

Run from the repository root: ``.venv/bin/python scripts/bench_publish.py [CHUNKS] [ROWS]``.
It starts a private ``redis-server`` (as the tests do), sends CHUNKS chunks of ROWS snapshots
(default 400 of 126, the drain bench's average chunk) each way over 10,000 games, and prints
Redis's own time per chunk from ``INFO commandstats``, which the client and the network do
not blur. docs/performance.md has the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from consumer.devtools.embedded import running
from consumer.runtime.fence import PUBLISH, Fence, packed_row, publish_command
from store.outbox import OutboxRow


def rows(start: int, count: int) -> list[tuple[int, OutboxRow]]:
    """``count`` snapshots with seqs from ``start``, spread over 10,000 games."""
    return [
        (
            seq,
            OutboxRow(f"{seq}-0", f"game-{seq * 7919 % 10000:05d}", "running", "healthy", 12, 1),
        )
        for seq in range(start, start + count)
    ]


def scripted(client: redis.Redis, chunks: int, size: int) -> float:
    """Redis's microseconds per chunk for the publish script, epochs and marks included."""
    conn = client.connection_pool.get_connection()
    conn.send_command("SCRIPT", "LOAD", PUBLISH)  # type: ignore[no-untyped-call]
    conn.read_response()
    fence = Fence("{lobby}:fence", {0: 1}, "{lobby}:marks")
    for chunk in range(chunks):
        batch = rows(chunk * size + 1, size)
        packed = publish_command("lobby", fence, [packed_row(*row) for row in batch])
        conn.send_packed_command([packed])  # type: ignore[no-untyped-call]
        conn.read_response()
    client.connection_pool.release(conn)
    return float(client.info("commandstats")["cmdstat_evalsha"]["usec"]) / chunks


def plain(client: redis.Redis, chunks: int, size: int) -> float:
    """Redis's microseconds per chunk for the same snapshots as pipelined XADDs."""
    for chunk in range(chunks):
        pipe = client.pipeline(transaction=False)
        for _seq, row in rows(chunk * size + 1, size):
            fields: dict[str, object] = {"event_type": "runtime_snapshot_update"}
            fields |= {"game_id": row.game_id}
            fields |= {"runtime_status": row.runtime_status, "current_turn": row.current_turn}
            fields |= {"engine_health_summary": row.engine_health_summary}
            fields |= {"player_turn_stats": "[]", "occurred_at_ms": row.occurred_at_ms}
            pipe.xadd("lobby", fields | {"source_entry_id": row.source_entry_id})  # type: ignore[arg-type]
        pipe.execute()
    return float(client.info("commandstats")["cmdstat_xadd"]["usec"]) / chunks


def main(chunks: int, size: int) -> None:
    with running() as server:
        client = redis.Redis.from_url(server.url)
        for name, run in (("publish script", scripted), ("plain XADDs", plain)):
            client.flushall()
            client.config_resetstat()
            per_chunk = run(client, chunks, size)
            print(f"{name}: {per_chunk:,.0f} us per chunk, {per_chunk / size:.2f} us per snapshot")
        print(f"redis-server {client.info('server')['redis_version']}")


if __name__ == "__main__":
    args = [int(value) for value in sys.argv[1:3]]
    main(*args) if args else main(400, 126)
