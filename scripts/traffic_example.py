"""The docs' traffic example: the bench's workload drained by the real worker, then drawn.

Run from the repository root: ``.venv/bin/python scripts/traffic_example.py [EVENTS]``
(default 200,000, as ``healthfsm bench``). It registers the bench's 10,000 running games in
a scratch SQLite store, writes the bench's workload (seed 1) to a private Redis, runs
``healthfsm consume --drain`` on it, then ``healthfsm diagram --traffic`` into
docs/traffic/ (both diagrams, and the counts as ``counts.json``).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumer.devtools import embedded
from consumer.devtools.bench import fresh_database, seed_stream, workload

OUT = Path(__file__).resolve().parent.parent / "docs" / "traffic"
HEALTHFSM = [sys.executable, "-m", "consumer.cli"]


def main(events: int) -> None:
    server = embedded.start()
    try:
        with tempfile.TemporaryDirectory(prefix="healthfsm-traffic-") as scratch:
            db = str(Path(scratch) / "bench.db")
            fresh_database(db, 10_000)
            client = redis.Redis.from_url(server.url)
            try:
                seed_stream(client, "runtime:health_events", workload(events, 10_000, 1))
            finally:
                client.close()
            where = ["--db", db]
            subprocess.run(
                [*HEALTHFSM, "consume", "--drain", "--redis-url", server.url, *where], check=True
            )
            subprocess.run(
                [*HEALTHFSM, "diagram", "--traffic", *where, "--out", str(OUT)], check=True
            )
            counts = subprocess.run(
                [*HEALTHFSM, "diagram", "--traffic", "--json", *where],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            OUT.joinpath("counts.json").write_text(counts)
    finally:
        server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
