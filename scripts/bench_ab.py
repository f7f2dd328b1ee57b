"""Alternate two builds of healthfsm in one sitting: ``healthfsm bench`` from each, in turn.

Run from the repository root: ``.venv/bin/python scripts/bench_ab.py sqlite|postgres RUNS
OLD_TREE NEW_TREE [MORE_TREES...]`` where each tree is a checkout (``git worktree add
/tmp/old COMMIT``), named by its folder; each run goes through the trees in a rotated order;
each run is ``bench --rounds 3 --steady-seconds 0 --memory-events 0 --single-events 1000
--json`` with the tree as its working folder, so its packages shadow the installed ones.
With ``postgres`` a durable PostgreSQL 16 from the pgserver wheel serves both builds and
the drain has 100,000 events. Prints each run's drain; the JSON reports go to
``bench-ab-BACKEND.json`` in the working folder (docs/performance.md has the figures).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import pg_server  # after the path: the test server's starter


def main(backend: str, runs: int, trees: list[str]) -> None:
    extra = ["--rounds", "3", "--steady-seconds", "0", "--memory-events", "0"]
    extra += ["--single-events", "1000", "--json"]
    server = pg_server.start(durable=True) if backend == "postgres" else None
    if server is not None:
        extra += ["--db", server.url(), "--events", "100000"]
    names = {tree: Path(tree).name for tree in trees}
    reports: dict[str, list[object]] = {name: [] for name in names.values()}
    try:
        for i in range(runs):
            for tree in trees[i % len(trees) :] + trees[: i % len(trees)]:
                name = names[tree]
                started = time.time()
                done = subprocess.run(
                    [sys.executable, "-m", "consumer.cli", "bench", *extra],
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                report = json.loads(done.stdout)
                reports[name].append(report)
                took = time.time() - started
                print(f"{name} ({took:.0f}s): drain {report['drain_events_per_s']:,.0f} events/s")
    finally:
        if server is not None:
            server.stop()
    Path(f"bench-ab-{backend}.json").write_text(json.dumps(reports))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
